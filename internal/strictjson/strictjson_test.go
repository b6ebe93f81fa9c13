package strictjson

import (
	"strings"
	"testing"

	"github.com/switchboardhq/switchboard/core/apierr"
)

func TestUnmarshal(t *testing.T) {
	type T struct {
		A int    `json:"a"`
		B string `json:"b"`
	}
	var v T
	if err := Unmarshal([]byte(` {"a":1,"b":"x"} `), &v); err != nil || v.A != 1 || v.B != "x" {
		t.Fatalf("valid: %+v %v", v, err)
	}
	for in, want := range map[string]string{
		`{"a":"x"}`:       `field "a" must be int`,
		`{"c":1}`:         "unknown field",
		`{"a":1} {"a":2}`: "trailing data",
		`{"a":1`:          "unexpected end",
		`{"a":1,}`:        "invalid JSON",
		``:                "unexpected end",
	} {
		err := Unmarshal([]byte(in), &v)
		if apierr.CodeOf(err) != apierr.InvalidJSON || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want InvalidJSON containing %q", in, err, want)
		}
	}
}
