package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/switchboardhq/switchboard/core/apierr"
)

// MaxPatternLen is the maximum length in bytes of a capability pattern,
// not counting the trailing '*' of a prefix glob. It matches the maximum
// length of a channel name.
const MaxPatternLen = 256

// Capability maps a resource pattern to the operations allowed on the names
// it matches.
//
// A pattern is "*" (every name), a prefix glob ending in '*' such as "chat:*"
// (every name starting with "chat:", including "chat:" itself), or an exact
// name. A '*' anywhere but at the end is invalid. Patterns are at most
// [MaxPatternLen] bytes of UTF-8 without control characters.
//
// The JSON form is an object mapping patterns to lists of operation names,
// for example {"chat:*":["publish","subscribe"],"admin":["*"]}.
type Capability map[string][]Operation

// pattern is a parsed capability pattern. "*" is the glob with an empty
// prefix.
type pattern struct {
	prefix string // the exact name, or the glob's prefix without '*'
	glob   bool
}

// parsePattern parses and validates a capability pattern.
func parsePattern(p string) (pattern, error) {
	if p == "" {
		return pattern{}, errors.New("pattern is empty")
	}
	pt := pattern{prefix: p}
	if strings.HasSuffix(p, "*") {
		pt = pattern{prefix: p[:len(p)-1], glob: true}
	}
	if strings.Contains(pt.prefix, "*") {
		return pattern{}, errors.New("'*' is allowed only at the end of a pattern")
	}
	if len(pt.prefix) > MaxPatternLen {
		return pattern{}, fmt.Errorf("pattern is %d bytes, the maximum is %d", len(pt.prefix), MaxPatternLen)
	}
	if err := checkText(pt.prefix); err != nil {
		return pattern{}, fmt.Errorf("pattern %w", err)
	}
	return pt, nil
}

// checkText reports whether s is valid UTF-8 without control characters.
func checkText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return errors.New("contains a control character")
		}
	}
	return nil
}

// matches reports whether name is one of the names p matches.
func (p pattern) matches(name string) bool {
	if p.glob {
		return strings.HasPrefix(name, p.prefix)
	}
	return name == p.prefix
}

// within reports whether every name p matches is also matched by q.
func (p pattern) within(q pattern) bool {
	if q.glob {
		return strings.HasPrefix(p.prefix, q.prefix)
	}
	return !p.glob && p.prefix == q.prefix
}

// String returns the pattern in its textual form.
func (p pattern) String() string {
	if p.glob {
		return p.prefix + "*"
	}
	return p.prefix
}

// Validate reports whether c is well formed: every pattern valid and every
// pattern mapped to a non-empty list of known operations. An empty
// capability is valid and allows nothing. Errors are BadRequest errors.
func (c Capability) Validate() error {
	for _, p := range sortedPatterns(c) {
		if _, err := parsePattern(p); err != nil {
			return apierr.Wrap(err, apierr.BadRequest, "invalid capability pattern %s: %v", quote(p), err)
		}
		ops := c[p]
		if len(ops) == 0 {
			return apierr.New(apierr.BadRequest, "capability pattern %s has no operations", quote(p))
		}
		for _, op := range ops {
			if !op.Valid() {
				return apierr.New(apierr.BadRequest, "capability pattern %s: unknown operation %s (want one of %s)",
					quote(p), quote(string(op)), opNames())
			}
		}
	}
	return nil
}

// Allows reports whether c allows op on the resource called name. Invalid
// patterns and unknown operations never allow anything.
func (c Capability) Allows(name string, op Operation) bool {
	bit := op.bit()
	if bit == 0 {
		return false
	}
	for p, ops := range c {
		if setOf(ops)&bit == 0 {
			continue
		}
		pt, err := parsePattern(p)
		if err == nil && pt.matches(name) {
			return true
		}
	}
	return false
}

// Subset reports whether everything c allows is also allowed by of: for
// every pattern p of c and every operation of p, some pattern q of of that
// matches every name p can match grants that operation. That holds when q is
// "*", q equals p, or q is a prefix glob "x*" and p (exact name or glob)
// starts with "x". Operations are independent: admin does not imply the
// others. A capability with an invalid pattern or operation is a subset of
// nothing.
func (c Capability) Subset(of Capability) bool {
	_, _, excess := c.excess(of)
	return !excess
}

// excess returns the first (pattern, operation) of c, in sorted order, that
// of does not allow for every name the pattern matches.
func (c Capability) excess(of Capability) (string, Operation, bool) {
	type grant struct {
		pt  pattern
		ops opSet
	}
	grants := make([]grant, 0, len(of))
	for q, ops := range of {
		if qt, err := parsePattern(q); err == nil {
			grants = append(grants, grant{qt, setOf(ops)})
		}
	}
	for _, p := range sortedPatterns(c) {
		pt, err := parsePattern(p)
		if err != nil {
			return p, "", true
		}
		for _, op := range c[p] {
			bit := op.bit()
			if bit == 0 {
				return p, op, true
			}
			covered := false
			for _, g := range grants {
				if g.ops&bit != 0 && pt.within(g.pt) {
					covered = true
					break
				}
			}
			if !covered {
				return p, op, true
			}
		}
	}
	return "", "", false
}

// intersect returns the capability that allows exactly what both a and b
// allow. Two patterns always either match disjoint sets of names or one
// matches a subset of the other's names, so the intersection of two
// patterns is one of them or nothing and the result is exact.
func intersect(a, b Capability) Capability {
	type grant struct {
		pt  pattern
		ops opSet
	}
	parse := func(c Capability) []grant {
		out := make([]grant, 0, len(c))
		for p, ops := range c {
			pt, err := parsePattern(p)
			if s := setOf(ops); err == nil && s != 0 {
				out = append(out, grant{pt, s})
			}
		}
		return out
	}
	ga, gb := parse(a), parse(b)
	sets := make(map[string]opSet)
	for _, x := range ga {
		for _, y := range gb {
			ops := x.ops & y.ops
			if ops == 0 {
				continue
			}
			switch {
			case x.pt.within(y.pt):
				sets[x.pt.String()] |= ops
			case y.pt.within(x.pt):
				sets[y.pt.String()] |= ops
			}
		}
	}
	out := make(Capability, len(sets))
	for p, s := range sets {
		out[p] = s.list()
	}
	return out
}

// normalized returns a copy of c with every operation list deduplicated and
// in canonical order. Unknown operations are dropped.
func (c Capability) normalized() Capability {
	if c == nil {
		return nil
	}
	out := make(Capability, len(c))
	for p, ops := range c {
		out[p] = setOf(ops).list()
	}
	return out
}

// ParseCapabilityJSON parses a capability from its JSON form, an object
// mapping patterns to lists of operation names, for example
// {"chat:*":["publish","subscribe"]}. The operation "*" stands for every
// operation. The result is validated; malformed JSON is an InvalidJSON error
// and an invalid capability a BadRequest error.
func ParseCapabilityJSON(b []byte) (Capability, error) {
	var raw map[string][]string
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return nil, apierr.Wrap(err, apierr.InvalidJSON,
			"capability must be a JSON object mapping patterns to lists of operations")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, apierr.Wrap(err, apierr.InvalidJSON, "capability JSON has data after the object")
	}
	if raw == nil {
		return nil, apierr.New(apierr.InvalidJSON, "capability must be a JSON object, not null")
	}
	c := make(Capability, len(raw))
	for _, p := range slices.Sorted(maps.Keys(raw)) {
		ops, err := ParseOperations(raw[p])
		if err != nil {
			return nil, apierr.Wrap(err, apierr.BadRequest, "capability pattern %s: %s", quote(p), apierr.From(err).Message)
		}
		c[p] = ops
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// UnmarshalJSON implements json.Unmarshaler with the rules of
// [ParseCapabilityJSON].
func (c *Capability) UnmarshalJSON(b []byte) error {
	if c == nil {
		return apierr.New(apierr.Internal, "auth: UnmarshalJSON into a nil *Capability")
	}
	parsed, err := ParseCapabilityJSON(b)
	if err != nil {
		return err
	}
	*c = parsed
	return nil
}

// sortedPatterns returns the patterns of c in sorted order, so that errors
// are deterministic.
func sortedPatterns(c Capability) []string {
	return slices.Sorted(maps.Keys(c))
}

// maxQuoted bounds how much of a client-supplied string an error repeats.
const maxQuoted = 256

// quote returns s quoted for an error message, shortened if long.
func quote(s string) string {
	if len(s) > maxQuoted {
		cut := maxQuoted
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}
