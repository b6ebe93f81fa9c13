// Package channel validates channel names and parses the channel parameters
// qualifier.
//
// Wherever a channel name is accepted, on any protocol, it may be prefixed
// with a qualifier of the form "[?param=value&...]", for example
// "[?rewind=10]sensors:42" or "[?rewind=30s]chat:room-1". This package is the
// only place that syntax is parsed, so every adapter accepts exactly the
// same forms and rejects bad input with the same errors.
package channel

import (
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchboardhq/switchboard/core/apierr"
)

// MaxNameLen is the maximum length of a channel name in bytes.
const MaxNameLen = 256

// MaxRewindCount bounds a rewind by count.
const MaxRewindCount = 10000

// ValidateName reports whether name is a valid channel name: 1–256 bytes of
// UTF-8 without control characters.
func ValidateName(name string) error {
	if name == "" {
		return apierr.New(apierr.InvalidChannelName, "channel name is empty")
	}
	if len(name) > MaxNameLen {
		return apierr.New(apierr.InvalidChannelName, "channel name is %d bytes, the maximum is %d", len(name), MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return apierr.New(apierr.InvalidChannelName, "channel name is not valid UTF-8")
	}
	for _, r := range name {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return apierr.New(apierr.InvalidChannelName, "channel name contains control character %U", r)
		}
	}
	return nil
}

// Namespace returns the namespace of a channel: the part before the first
// ':', or "" when the name has none.
func Namespace(name string) string {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return name[:i]
	}
	return ""
}

// Rewind asks for recent messages on first attach: the last Count messages,
// or those of the last Duration. The zero value asks for none.
type Rewind struct {
	Count    int
	Duration time.Duration
}

// IsZero reports whether r asks for no rewind.
func (r Rewind) IsZero() bool { return r.Count == 0 && r.Duration == 0 }

// String renders r in the qualifier syntax ("10", "30s"), or "" for none.
func (r Rewind) String() string {
	switch {
	case r.Count > 0:
		return strconv.Itoa(r.Count)
	case r.Duration > 0:
		return r.Duration.String()
	}
	return ""
}

// ParseRewind parses a rewind value: a non-negative count ("10") or a
// positive Go duration ("30s", "2m").
func ParseRewind(s string) (Rewind, error) {
	if s == "" {
		return Rewind{}, apierr.New(apierr.InvalidQualifier, "rewind value is empty")
	}
	if s[0] >= '0' && s[0] <= '9' && strings.Trim(s, "0123456789") == "" {
		n, err := strconv.Atoi(s)
		if err != nil || n > MaxRewindCount {
			return Rewind{}, apierr.New(apierr.InvalidQualifier, "rewind count %q is out of range (0..%d)", s, MaxRewindCount)
		}
		return Rewind{Count: n}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return Rewind{}, apierr.New(apierr.InvalidQualifier, "rewind %q is neither a count nor a positive duration such as 30s", s)
	}
	return Rewind{Duration: d}, nil
}

// Spec is a channel name with the parameters of its qualifier.
type Spec struct {
	Name string
	// Rewind is set when the qualifier carried rewind=.
	Rewind    Rewind
	HasRewind bool
}

// String renders the spec back in qualifier syntax.
func (s Spec) String() string {
	if !s.HasRewind {
		return s.Name
	}
	r := s.Rewind.String()
	if r == "" {
		r = "0"
	}
	return "[?rewind=" + r + "]" + s.Name
}

// Parse parses an optionally qualified channel name such as
// "[?rewind=10]sensors:42" and validates the name. Unknown parameters,
// repeated parameters and bad values are errors.
func Parse(s string) (Spec, error) {
	if !strings.HasPrefix(s, "[") {
		if err := ValidateName(s); err != nil {
			return Spec{}, err
		}
		return Spec{Name: s}, nil
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return Spec{}, apierr.New(apierr.InvalidQualifier, "channel qualifier is missing its closing ']'")
	}
	inner, name := s[1:end], s[end+1:]
	if !strings.HasPrefix(inner, "?") {
		return Spec{}, apierr.New(apierr.InvalidQualifier, "channel qualifier must start with '[?'")
	}
	spec := Spec{Name: name}
	if err := spec.applyParams(inner[1:]); err != nil {
		return Spec{}, err
	}
	if err := ValidateName(name); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

func (s *Spec) applyParams(query string) error {
	if query == "" {
		return apierr.New(apierr.InvalidQualifier, "channel qualifier has no parameters")
	}
	seen := map[string]bool{}
	for _, pair := range strings.Split(query, "&") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return apierr.New(apierr.InvalidQualifier, "channel qualifier parameter %q has no value", pair)
		}
		key, err := url.QueryUnescape(k)
		if err != nil {
			return apierr.New(apierr.InvalidQualifier, "channel qualifier parameter name %q is badly escaped", k)
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return apierr.New(apierr.InvalidQualifier, "channel qualifier value %q is badly escaped", v)
		}
		if seen[key] {
			return apierr.New(apierr.InvalidQualifier, "channel qualifier parameter %q is repeated", key)
		}
		seen[key] = true
		switch key {
		case "rewind":
			r, err := ParseRewind(val)
			if err != nil {
				return err
			}
			s.Rewind, s.HasRewind = r, true
		default:
			return apierr.New(apierr.InvalidQualifier, "unknown channel parameter %q (known: rewind)", key)
		}
	}
	return nil
}
