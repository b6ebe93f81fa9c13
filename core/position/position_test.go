package position

import (
	"strings"
	"testing"

	"github.com/switchboardhq/switchboard/core/apierr"
)

func TestRoundTrip(t *testing.T) {
	cases := []Position{
		{},
		Of(Serial{Region: "local", Epoch: 1732368000123, Seq: 1}),
		Of(Serial{Region: "us", Epoch: 7, Seq: 1 << 62}, Serial{Region: "eu", Epoch: 9, Seq: 3}),
	}
	for _, p := range cases {
		s := p.String()
		if strings.ContainsAny(s, "+/=") {
			t.Fatalf("%q is not URL-safe", s)
		}
		q, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		if !q.Equal(p) {
			t.Fatalf("round trip %v -> %q -> %v", p.entries, s, q.entries)
		}
	}
}

func TestWithAndGet(t *testing.T) {
	p := Of(Serial{Region: "us", Epoch: 1, Seq: 5})
	p2 := p.With(Serial{Region: "eu", Epoch: 1, Seq: 2}).With(Serial{Region: "us", Epoch: 1, Seq: 6})
	if s, _ := p.Get("us"); s.Seq != 5 {
		t.Fatalf("With mutated the original: %+v", s)
	}
	if s, ok := p2.Get("us"); !ok || s.Seq != 6 {
		t.Fatalf("Get(us) = %+v %v", s, ok)
	}
	if e := p2.Entries(); len(e) != 2 || e[0].Region != "eu" || e[1].Region != "us" {
		t.Fatalf("entries not sorted: %+v", e)
	}
	if _, ok := p2.Get("ap"); ok {
		t.Fatal("Get(ap) found a region that is not there")
	}
}

func TestCompact(t *testing.T) {
	s := Of(Serial{Region: "local", Epoch: 1732368000123, Seq: 123456}).String()
	if len(s) > 24 {
		t.Fatalf("single-region position %q is %d chars, want <= 24", s, len(s))
	}
}

func TestParseRejects(t *testing.T) {
	valid := Of(Serial{Region: "local", Epoch: 1, Seq: 2}).String()
	bad := []string{
		"!!!", "AA", valid + "A", valid[:len(valid)-2], strings.Repeat("A", MaxEncodedLen+1),
		"AgEFbG9jYWwBAg", // version 2
		"AQA",            // zero entries
		"AQIBYQEBAWEBAQ", // regions not strictly ascending (a, a)
	}
	for _, s := range bad {
		if _, err := Parse(s); apierr.CodeOf(err) != apierr.InvalidPosition {
			t.Errorf("Parse(%q) error = %v, want InvalidPosition", s, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("")
	f.Add(Of(Serial{Region: "local", Epoch: 1, Seq: 2}).String())
	f.Add(Of(Serial{Region: "us", Epoch: 7, Seq: 1 << 62}, Serial{Region: "eu", Epoch: 9, Seq: 3}).String())
	f.Add("AQIBYQEBAWEBAQ")
	f.Add("not a position")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			if apierr.CodeOf(err) != apierr.InvalidPosition {
				t.Fatalf("error without stable code: %v", err)
			}
			return
		}
		// Accepted positions have exactly one canonical form.
		if got := p.String(); got != s {
			t.Fatalf("Parse(%q) re-encodes as %q", s, got)
		}
	})
}
