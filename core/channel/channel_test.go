package channel

import (
	"strings"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/core/apierr"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
		code apierr.Code
	}{
		{in: "sensors:42", want: Spec{Name: "sensors:42"}},
		{in: "[?rewind=10]sensors:42", want: Spec{Name: "sensors:42", Rewind: Rewind{Count: 10}, HasRewind: true}},
		{in: "[?rewind=30s]chat:room-1", want: Spec{Name: "chat:room-1", Rewind: Rewind{Duration: 30 * time.Second}, HasRewind: true}},
		{in: "[?rewind=0]x", want: Spec{Name: "x", HasRewind: true}},
		{in: "[?rewind=2m]a/b/c", want: Spec{Name: "a/b/c", Rewind: Rewind{Duration: 2 * time.Minute}, HasRewind: true}},
		{in: "[?rewind=%31%30]x", want: Spec{Name: "x", Rewind: Rewind{Count: 10}, HasRewind: true}},
		{in: "", code: apierr.InvalidChannelName},
		{in: "[?rewind=10]", code: apierr.InvalidChannelName},
		{in: "[?rewind=10", code: apierr.InvalidQualifier},
		{in: "[rewind=10]x", code: apierr.InvalidQualifier},
		{in: "[?]x", code: apierr.InvalidQualifier},
		{in: "[?rewind]x", code: apierr.InvalidQualifier},
		{in: "[?rewind=]x", code: apierr.InvalidQualifier},
		{in: "[?rewind=-1]x", code: apierr.InvalidQualifier},
		{in: "[?rewind=-5s]x", code: apierr.InvalidQualifier},
		{in: "[?rewind=10x]x", code: apierr.InvalidQualifier},
		{in: "[?rewind=99999999999999999999]x", code: apierr.InvalidQualifier},
		{in: "[?rewind=10&rewind=5]x", code: apierr.InvalidQualifier},
		{in: "[?delta=vcdiff]x", code: apierr.InvalidQualifier},
		{in: "[?rewind=%zz]x", code: apierr.InvalidQualifier},
		{in: "bad\x00name", code: apierr.InvalidChannelName},
		{in: "bad\nname", code: apierr.InvalidChannelName},
		{in: "bad\u0085name", code: apierr.InvalidChannelName},
		{in: "\xff\xfe", code: apierr.InvalidChannelName},
		{in: strings.Repeat("a", 257), code: apierr.InvalidChannelName},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.code != 0 {
			if apierr.CodeOf(err) != tt.code {
				t.Errorf("Parse(%q) error = %v, want code %d", tt.in, err, tt.code)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q) unexpected error %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestNameLimits(t *testing.T) {
	if err := ValidateName(strings.Repeat("é", 128)); err != nil { // 256 bytes
		t.Fatalf("256-byte name rejected: %v", err)
	}
	if err := ValidateName("日本語:チャンネル"); err != nil {
		t.Fatalf("UTF-8 name rejected: %v", err)
	}
}

func TestNamespace(t *testing.T) {
	for in, want := range map[string]string{"chat:room-1": "chat", "chat": "", "a:b:c": "a", ":x": ""} {
		if got := Namespace(in); got != want {
			t.Errorf("Namespace(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSpecStringRoundTrip(t *testing.T) {
	for _, in := range []string{"x", "[?rewind=10]x", "[?rewind=30s]chat:a"} {
		s, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(s.String())
		if err != nil || back != s {
			t.Errorf("round trip of %q: %+v, %v", in, back, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"x", "[?rewind=10]sensors:42", "[?rewind=30s]chat:room-1", "[?rewind=", "[?a=b&c=d]x", "[]", "[?rewind=1h]\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := Parse(s)
		if err != nil {
			if apierr.CodeOf(err) != apierr.InvalidQualifier && apierr.CodeOf(err) != apierr.InvalidChannelName {
				t.Fatalf("Parse(%q) returned an error without a stable code: %v", s, err)
			}
			return
		}
		if err := ValidateName(spec.Name); err != nil {
			t.Fatalf("Parse(%q) accepted invalid name %q", s, spec.Name)
		}
		again, err := Parse(spec.String())
		if err != nil || again != spec {
			t.Fatalf("Parse(%q) = %+v does not round trip: %+v, %v", s, spec, again, err)
		}
	})
}
