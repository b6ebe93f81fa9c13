package config

import (
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a length of time written in Go syntax, e.g. "500ms", "30s",
// "2m" or "1h30m". In YAML it is always a string; a bare number such as 30
// is rejected because its unit would be ambiguous.
type Duration time.Duration

// String formats d in Go syntax, e.g. "2m0s".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := parseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML implements yaml.Marshaler: a Duration is written as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarValue(n, "duration")
	if err != nil {
		return err
	}
	v, err := parseDuration(s)
	if err != nil {
		return nodeError(n, err)
	}
	*d = v
	return nil
}

func parseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want a number with a unit, such as 500ms, 30s, 2m or 1h", s)
	}
	return Duration(v), nil
}

// Retention is how long a persisted namespace keeps its history. It is
// written like a Duration or as the literal "forever"; the zero value
// (Forever) means history never expires.
type Retention time.Duration

// Forever is the Retention that never expires history.
const Forever Retention = 0

// String returns "forever" for Forever and the Go duration syntax otherwise.
func (r Retention) String() string {
	if r == Forever {
		return "forever"
	}
	return time.Duration(r).String()
}

// MarshalText implements encoding.TextMarshaler.
func (r Retention) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Retention) UnmarshalText(b []byte) error {
	v, err := parseRetention(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// MarshalYAML implements yaml.Marshaler: a Retention is written as a string.
func (r Retention) MarshalYAML() (any, error) { return r.String(), nil }

// UnmarshalYAML implements yaml.Unmarshaler.
func (r *Retention) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarValue(n, "retention")
	if err != nil {
		return err
	}
	v, err := parseRetention(s)
	if err != nil {
		return nodeError(n, err)
	}
	*r = v
	return nil
}

func parseRetention(s string) (Retention, error) {
	if strings.EqualFold(strings.TrimSpace(s), "forever") {
		return Forever, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("invalid retention %q: want a positive duration such as 24h or 720h, or \"forever\"", s)
	}
	return Retention(d), nil
}

// Size is a number of bytes. It is written as a plain integer (65536) or
// as an integer with a unit: B, KiB, MiB, GiB (powers of 1024) or KB, MB, GB
// (powers of 1000). Units are matched case-insensitively.
type Size int64

// Binary size units.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
)

// String formats s with the largest binary unit that divides it exactly,
// e.g. "64KiB", "1MiB" or "1500".
func (s Size) String() string {
	switch {
	case s != 0 && s%GiB == 0:
		return strconv.FormatInt(int64(s/GiB), 10) + "GiB"
	case s != 0 && s%MiB == 0:
		return strconv.FormatInt(int64(s/MiB), 10) + "MiB"
	case s != 0 && s%KiB == 0:
		return strconv.FormatInt(int64(s/KiB), 10) + "KiB"
	default:
		return strconv.FormatInt(int64(s), 10)
	}
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := parseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalYAML implements yaml.Marshaler: a Size is written as a string.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	str, err := scalarValue(n, "size")
	if err != nil {
		return err
	}
	v, err := parseSize(str)
	if err != nil {
		return nodeError(n, err)
	}
	*s = v
	return nil
}

// sizeUnit returns the multiplier of a (lower-case) size unit.
func sizeUnit(u string) (int64, bool) {
	switch u {
	case "", "b":
		return 1, true
	case "kb":
		return 1000, true
	case "mb":
		return 1000 * 1000, true
	case "gb":
		return 1000 * 1000 * 1000, true
	case "kib":
		return 1 << 10, true
	case "mib":
		return 1 << 20, true
	case "gib":
		return 1 << 30, true
	}
	return 0, false
}

func parseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	bad := fmt.Errorf("invalid size %q: want a whole number of bytes, optionally with a unit, such as 65536, 64KiB or 1MiB", s)
	if i == 0 {
		return 0, bad
	}
	mult, ok := sizeUnit(strings.ToLower(strings.TrimSpace(t[i:])))
	if !ok {
		return 0, bad
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(n * mult), nil
}

// Secret is the shared secret of an API key. Every textual rendering of a
// Secret (fmt verbs %v %s %q %x, %#v, slog, and text, JSON or YAML
// marshalling) prints "***", so a secret cannot leak through logs, error
// messages or configuration dumps. Use string(s) or []byte(s) to obtain the
// actual value.
type Secret string

const redacted = "***"

// String returns "***".
func (Secret) String() string { return redacted }

// GoString returns a redacted Go representation.
func (Secret) GoString() string { return `config.Secret("***")` }

// LogValue implements slog.LogValuer and returns "***".
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText implements encoding.TextMarshaler and returns "***".
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// scalarValue returns the text of a scalar node or a YAML type error naming
// what was expected.
func scalarValue(n *yaml.Node, what string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", nodeError(n, fmt.Errorf("want a %s, not %s", what, kindName(n.Kind)))
	}
	return n.Value, nil
}

// nodeError reports err at node n in the format of the YAML decoder's own
// errors, plus the column, so that it can be mapped back to a key path.
func nodeError(n *yaml.Node, err error) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: column %d: %v", n.Line, n.Column, err)}}
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	default:
		return "a scalar"
	}
}
