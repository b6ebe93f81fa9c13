// Package strictjson decodes client JSON strictly: exactly one value, no
// unknown fields, no trailing data, and errors that name the offending field
// with Switchboard's InvalidJSON code.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/switchboardhq/switchboard/core/apierr"
)

// Unmarshal decodes b into v. Every problem is an *apierr.Error with code
// apierr.InvalidJSON and a message safe to show to the client.
func Unmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return apierr.Wrap(err, apierr.InvalidJSON, "field %q must be %s, not %s", te.Field, te.Type.String(), te.Value)
		case errors.As(err, &se):
			return apierr.Wrap(err, apierr.InvalidJSON, "invalid JSON at offset %d", se.Offset)
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return apierr.Wrap(err, apierr.InvalidJSON, "invalid JSON: unexpected end of input")
		default:
			return apierr.Wrap(err, apierr.InvalidJSON, "invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return apierr.New(apierr.InvalidJSON, "invalid JSON: trailing data after the value")
	}
	return nil
}
