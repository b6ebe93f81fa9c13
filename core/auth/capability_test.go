package auth

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/switchboardhq/switchboard/core/apierr"
)

func TestParseOperation(t *testing.T) {
	for _, op := range AllOperations() {
		got, err := ParseOperation(string(op))
		if err != nil || got != op {
			t.Errorf("ParseOperation(%q) = %q, %v", op, got, err)
		}
	}
	for _, s := range []string{"", "*", "Publish", "publish ", "read", "all"} {
		if _, err := ParseOperation(s); apierr.CodeOf(err) != apierr.BadRequest {
			t.Errorf("ParseOperation(%q) error = %v, want code %d", s, err, apierr.BadRequest)
		}
	}
}

func TestParseOperations(t *testing.T) {
	got, err := ParseOperations([]string{"subscribe", "publish", "subscribe"})
	if err != nil || !reflect.DeepEqual(got, []Operation{OpPublish, OpSubscribe}) {
		t.Errorf("dedup/order: got %v, %v", got, err)
	}
	got, err = ParseOperations([]string{"history", "*"})
	if err != nil || !reflect.DeepEqual(got, AllOperations()) {
		t.Errorf("*: got %v, %v", got, err)
	}
	if _, err := ParseOperations([]string{"publish", "nope"}); apierr.CodeOf(err) != apierr.BadRequest {
		t.Errorf("unknown op: err = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		c    Capability
		ok   bool
	}{
		{"nil", nil, true},
		{"empty", Capability{}, true},
		{"all", Capability{"*": {OpPublish}}, true},
		{"glob", Capability{"chat:*": {OpPublish, OpSubscribe}}, true},
		{"exact", Capability{"chat:room": {OpAdmin}}, true},
		{"glob without separator", Capability{"chat*": {OpHistory}}, true},
		{"unicode", Capability{"café:*": {OpPresence}}, true},
		{"empty pattern", Capability{"": {OpPublish}}, false},
		{"star in middle", Capability{"chat:*:x": {OpPublish}}, false},
		{"star at start", Capability{"*chat": {OpPublish}}, false},
		{"double star", Capability{"chat:**": {OpPublish}}, false},
		{"only stars", Capability{"**": {OpPublish}}, false},
		{"control char", Capability{"chat:\n": {OpPublish}}, false},
		{"bad utf8", Capability{"chat:\xff": {OpPublish}}, false},
		{"too long", Capability{strings.Repeat("a", MaxPatternLen+1): {OpPublish}}, false},
		{"max len glob", Capability{strings.Repeat("a", MaxPatternLen) + "*": {OpPublish}}, true},
		{"no ops", Capability{"chat:*": {}}, false},
		{"nil ops", Capability{"chat:*": nil}, false},
		{"unknown op", Capability{"chat:*": {"read"}}, false},
		{"star op in memory", Capability{"chat:*": {"*"}}, false},
	}
	for _, tt := range tests {
		err := tt.c.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && apierr.CodeOf(err) != apierr.BadRequest {
			t.Errorf("%s: code = %d, want %d", tt.name, apierr.CodeOf(err), apierr.BadRequest)
		}
	}
}

func TestAllows(t *testing.T) {
	tests := []struct {
		pattern string
		name    string
		want    bool
	}{
		{"*", "anything", true},
		{"*", "chat:room", true},
		{"*", "", true},
		{"chat:*", "chat:room", true},
		{"chat:*", "chat:", true},
		{"chat:*", "chat:a:b", true},
		{"chat:*", "chat", false},
		{"chat:*", "chatroom", false},
		{"chat:*", "xchat:room", false},
		{"chat*", "chat", true},
		{"chat*", "chatroom", true},
		{"chat*", "chat:room", true},
		{"chat*", "cha", false},
		{"chat:room", "chat:room", true},
		{"chat:room", "chat:room2", false},
		{"chat:room", "chat:roo", false},
		{"chat:room", "Chat:room", false},
		// Invalid patterns match nothing.
		{"chat:*:x", "chat:*:x", false},
		{"*chat", "xchat", false},
		{"", "", false},
	}
	for _, tt := range tests {
		c := Capability{tt.pattern: {OpSubscribe}}
		if got := c.Allows(tt.name, OpSubscribe); got != tt.want {
			t.Errorf("{%q}.Allows(%q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
		if c.Allows(tt.name, OpPublish) {
			t.Errorf("{%q}.Allows(%q, publish) = true without publish", tt.pattern, tt.name)
		}
	}
	c := Capability{"chat:*": {OpAdmin}}
	for _, op := range []Operation{OpPublish, OpSubscribe, OpPresence, OpHistory, OpQueue, "", "*", "bogus"} {
		if c.Allows("chat:x", op) {
			t.Errorf("admin implied %q", op)
		}
	}
	if !c.Allows("chat:x", OpAdmin) {
		t.Error("admin not allowed")
	}
	var nilCap Capability
	if nilCap.Allows("x", OpPublish) {
		t.Error("nil capability allowed something")
	}
	multi := Capability{"chat:*": {OpSubscribe}, "chat:lobby": {OpPublish}}
	if !multi.Allows("chat:lobby", OpPublish) || !multi.Allows("chat:lobby", OpSubscribe) || multi.Allows("chat:x", OpPublish) {
		t.Error("union of patterns wrong")
	}
}

func TestSubset(t *testing.T) {
	P, S, H, A := OpPublish, OpSubscribe, OpHistory, OpAdmin
	tests := []struct {
		name string
		c    Capability
		of   Capability
		want bool
	}{
		{"exact within glob", Capability{"chat:room": {P}}, Capability{"chat:*": {P}}, true},
		{"glob not within exact", Capability{"chat:*": {P}}, Capability{"chat:room": {P}}, false},
		{"chat:* within chat*", Capability{"chat:*": {P}}, Capability{"chat*": {P}}, true},
		{"chat* not within chat:*", Capability{"chat*": {P}}, Capability{"chat:*": {P}}, false},
		{"anything within *", Capability{"chat:*": {P}, "x": {P}, "*": {P}}, Capability{"*": {P, S}}, true},
		{"* not within glob", Capability{"*": {P}}, Capability{"chat:*": {P}}, false},
		{"* not within exact", Capability{"*": {P}}, Capability{"chat": {P}}, false},
		{"exact equal", Capability{"chat:room": {P}}, Capability{"chat:room": {P}}, true},
		{"exact different", Capability{"chat:room": {P}}, Capability{"chat:room2": {P}}, false},
		{"exact prefix of exact", Capability{"chat:room": {P}}, Capability{"chat:roo": {P}}, false},
		{"glob equal", Capability{"chat:*": {P}}, Capability{"chat:*": {P}}, true},
		{"narrower glob", Capability{"chat:a*": {P}}, Capability{"chat:*": {P}}, true},
		{"sibling glob", Capability{"chat:*": {P}}, Capability{"chatx*": {P}}, false},
		{"exact equal to glob prefix", Capability{"chat": {P}}, Capability{"chat*": {P}}, true},
		{"exact equal to glob prefix without sep", Capability{"chat": {P}}, Capability{"chat:*": {P}}, false},
		{"op missing", Capability{"chat:*": {P, S}}, Capability{"chat:*": {P}}, false},
		{"ops from different patterns", Capability{"chat:x": {P, S}}, Capability{"chat:*": {P}, "*": {S}}, true},
		{"ops split but one not covering", Capability{"chat:*": {P, S}}, Capability{"chat:*": {P}, "chat:x": {S}}, false},
		{"admin does not imply", Capability{"chat:*": {P}}, Capability{"*": {A}}, false},
		{"others do not imply admin", Capability{"chat:*": {A}}, Capability{"*": {P, S, H, OpPresence, OpQueue}}, false},
		{"empty within anything", Capability{}, Capability{}, true},
		{"nil within nil", nil, nil, true},
		{"something not within nil", Capability{"x": {P}}, nil, false},
		{"invalid pattern never subset", Capability{"a*b": {P}}, Capability{"*": AllOperations()}, false},
		{"unknown op never subset", Capability{"a": {"bogus"}}, Capability{"*": AllOperations()}, false},
		{"invalid pattern in of ignored", Capability{"a*b": {P}}, Capability{"a*b": {P}}, false},
	}
	for _, tt := range tests {
		if got := tt.c.Subset(tt.of); got != tt.want {
			t.Errorf("%s: %v.Subset(%v) = %v, want %v", tt.name, tt.c, tt.of, got, tt.want)
		}
	}
}

// randomCapability builds capabilities over a small alphabet so that
// patterns often overlap.
func randomCapability(r *rand.Rand) Capability {
	c := Capability{}
	n := r.IntN(4)
	for range n {
		var b strings.Builder
		for range r.IntN(3) {
			b.WriteByte("ab:"[r.IntN(3)])
		}
		p := b.String()
		switch {
		case r.IntN(3) > 0:
			p += "*"
		case p == "":
			p = "a"
		}
		var ops []Operation
		for _, op := range AllOperations()[:3] {
			if r.IntN(2) == 0 {
				ops = append(ops, op)
			}
		}
		if len(ops) == 0 {
			ops = []Operation{OpPublish}
		}
		c[p] = ops
	}
	return c
}

// sampleNames returns every name over the test alphabet up to length 4.
func sampleNames() []string {
	names := []string{""}
	prev := []string{""}
	for range 4 {
		var next []string
		for _, p := range prev {
			for _, ch := range "ab:" {
				next = append(next, p+string(ch))
			}
		}
		names = append(names, next...)
		prev = next
	}
	return names
}

func TestIntersectIsConjunction(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	names := sampleNames()
	for i := range 2000 {
		a, b := randomCapability(r), randomCapability(r)
		got := intersect(a, b)
		if err := got.Validate(); err != nil {
			t.Fatalf("case %d: intersect(%v, %v) = %v invalid: %v", i, a, b, got, err)
		}
		if !got.Subset(a) || !got.Subset(b) {
			t.Fatalf("case %d: intersect(%v, %v) = %v is not a subset of both", i, a, b, got)
		}
		for _, name := range names {
			for _, op := range AllOperations() {
				want := a.Allows(name, op) && b.Allows(name, op)
				if got.Allows(name, op) != want {
					t.Fatalf("case %d: intersect(%v, %v) = %v; Allows(%q, %s) = %v, want %v",
						i, a, b, got, name, op, !want, want)
				}
			}
		}
	}
}

func TestSubsetIsSound(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	names := sampleNames()
	subsets := 0
	for i := range 5000 {
		c, of := randomCapability(r), randomCapability(r)
		if !c.Subset(of) {
			continue
		}
		subsets++
		for _, name := range names {
			for _, op := range AllOperations() {
				if c.Allows(name, op) && !of.Allows(name, op) {
					t.Fatalf("case %d: %v.Subset(%v) but %q/%s allowed only by the first", i, c, of, name, op)
				}
			}
		}
	}
	if subsets < 100 {
		t.Fatalf("only %d random subsets; the generator is too weak to test anything", subsets)
	}
}

func TestParseCapabilityJSON(t *testing.T) {
	tests := []struct {
		in   string
		want Capability
		code apierr.Code
	}{
		{in: `{"chat:*":["publish","subscribe"]}`, want: Capability{"chat:*": {OpPublish, OpSubscribe}}},
		{in: `{"chat:*":["subscribe","publish","subscribe"]}`, want: Capability{"chat:*": {OpPublish, OpSubscribe}}},
		{in: `{"*":["*"]}`, want: Capability{"*": AllOperations()}},
		{in: ` {"a":["admin"], "b*":["queue","history"]} `, want: Capability{"a": {OpAdmin}, "b*": {OpHistory, OpQueue}}},
		{in: `{}`, want: Capability{}},
		{in: ``, code: apierr.InvalidJSON},
		{in: `null`, code: apierr.InvalidJSON},
		{in: `[]`, code: apierr.InvalidJSON},
		{in: `{"a":"publish"}`, code: apierr.InvalidJSON},
		{in: `{"a":[1]}`, code: apierr.InvalidJSON},
		{in: `{"a":["publish"]} {}`, code: apierr.InvalidJSON},
		{in: `{"a":["publish"]`, code: apierr.InvalidJSON},
		{in: `{"a":[]}`, code: apierr.BadRequest},
		{in: `{"a":null}`, code: apierr.BadRequest},
		{in: `{"a":["read"]}`, code: apierr.BadRequest},
		{in: `{"a*b":["publish"]}`, code: apierr.BadRequest},
		{in: `{"":["publish"]}`, code: apierr.BadRequest},
	}
	for _, tt := range tests {
		got, err := ParseCapabilityJSON([]byte(tt.in))
		if apierr.CodeOf(err) != tt.code {
			t.Errorf("ParseCapabilityJSON(%s) error = %v, want code %d", tt.in, err, tt.code)
			continue
		}
		if err == nil && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseCapabilityJSON(%s) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestCapabilityJSONRoundTrip(t *testing.T) {
	c := Capability{"chat:*": {OpPublish, OpSubscribe}, "admin": AllOperations()}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back struct{ C Capability }
	if err := json.Unmarshal([]byte(`{"C":`+string(b)+`}`), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.C, c) {
		t.Errorf("round trip: got %v, want %v", back.C, c)
	}
	if err := json.Unmarshal([]byte(`{"C":{"x*y":["publish"]}}`), &back); apierr.CodeOf(err) != apierr.BadRequest {
		t.Errorf("UnmarshalJSON of an invalid capability: err = %v", err)
	}
}
