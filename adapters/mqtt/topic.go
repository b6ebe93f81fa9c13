package mqtt

import (
	"strings"

	"github.com/switchboardhq/switchboard/core/channel"
)

// Topic names are channel names: an MQTT PUBLISH to "sensors/42" appends to
// the channel "sensors/42", and a channel published anywhere else reaches
// MQTT subscribers whose filter matches its name by MQTT rules.

const (
	// systemPrefix starts the topics the adapter itself publishes to; clients
	// may subscribe to them but not publish.
	systemPrefix = "$switchboard/"
	// continuityTopic carries continuity notices (resumes that could not be
	// complete) to clients of every protocol version.
	continuityTopic = systemPrefix + "continuity"
	sharePrefix     = "$share/"
	sysPrefix       = "$SYS"
)

// subscriptionFilter is a SUBSCRIBE topic filter taken apart.
type subscriptionFilter struct {
	// Filter is the filter without qualifier or share prefix.
	Filter string
	// Group is the shared-subscription group, "" when not shared.
	Group string
	// Rewind is the qualifier's rewind, if any.
	Rewind    channel.Rewind
	HasRewind bool
}

// Key is how the subscription is known in the session: the filter as
// written, without qualifier (a qualifier only says where delivery starts).
func (f subscriptionFilter) Key() string {
	if f.Group != "" {
		return sharePrefix + f.Group + "/" + f.Filter
	}
	return f.Filter
}

// Wildcard reports whether the filter can match more than one channel.
func (f subscriptionFilter) Wildcard() bool {
	return strings.ContainsAny(f.Filter, "+#")
}

// parseSubscriptionFilter splits a SUBSCRIBE filter: an optional
// "$share/<group>/" prefix, then an optional channel qualifier such as
// "[?rewind=10]", then the MQTT topic filter. It validates the filter by the
// MQTT rules ('#' only last and alone in its level, '+' alone in its level).
func parseSubscriptionFilter(raw string) (subscriptionFilter, error) {
	var f subscriptionFilter
	rest := raw
	if strings.HasPrefix(rest, sharePrefix) {
		group, filter, ok := strings.Cut(rest[len(sharePrefix):], "/")
		if !ok || group == "" || strings.ContainsAny(group, "+#") {
			return f, errorf("shared subscription %q needs the form $share/<group>/<filter>", raw)
		}
		f.Group, rest = group, filter
	}
	if strings.HasPrefix(rest, "[") {
		spec, err := channel.Parse(rest)
		if err != nil {
			return f, err
		}
		if f.Group != "" {
			return f, errorf("shared subscription %q cannot carry a qualifier", raw)
		}
		f.Rewind, f.HasRewind, rest = spec.Rewind, spec.HasRewind, spec.Name
		if strings.HasPrefix(rest, "[") || strings.HasPrefix(rest, sharePrefix) {
			return f, errorf("subscription %q: one qualifier, then the topic filter", raw)
		}
	}
	if err := validateFilter(rest); err != nil {
		return f, err
	}
	f.Filter = rest
	return f, nil
}

// validateFilter checks an MQTT topic filter.
func validateFilter(filter string) error {
	if filter == "" {
		return errorf("topic filter is empty")
	}
	if len(filter) > channel.MaxNameLen {
		return errorf("topic filter is %d bytes, the maximum is %d", len(filter), channel.MaxNameLen)
	}
	for rest := filter; ; {
		level, next, more := strings.Cut(rest, "/")
		switch {
		case level == "#":
			if more {
				return errorf("'#' must be the last level of topic filter %q", filter)
			}
		case level == "+":
		case strings.ContainsAny(level, "+#"):
			return errorf("wildcards must fill a whole level in topic filter %q", filter)
		}
		if !more {
			break
		}
		rest = next
	}
	// Apart from its wildcards a filter follows the channel name rules.
	return channel.ValidateName(filter)
}

// matchTopic reports whether the MQTT topic filter matches the channel
// name. Topics beginning with '$' are not matched by a wildcard in the
// first level [MQTT-4.7.2-1].
func matchTopic(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case !fmore && !tmore:
			return true
		case !fmore:
			return false
		case !tmore:
			// "a/#" also matches "a" itself [MQTT-4.7.1-2].
			return frest == "#"
		}
		filter, topic = frest, trest
	}
}

// literalPrefix is the part of a filter before its first wildcard level,
// without the separator ("a/#" also matches "a"): every channel the filter
// matches starts with it.
func literalPrefix(filter string) string {
	i := strings.IndexAny(filter, "+#")
	if i < 0 {
		return filter
	}
	return strings.TrimSuffix(filter[:i], "/")
}
