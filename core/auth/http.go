package auth

import (
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/switchboardhq/switchboard/core/apierr"
)

// Query parameters that carry credentials.
const (
	KeyParam         = "key"
	AccessTokenParam = "accessToken"
)

// CredentialsFromHTTP extracts credentials from a request, from exactly one
// of:
//
//   - "Authorization: Bearer <token>", or "Bearer name:secret" with a key;
//   - "Authorization: Basic base64(name:secret)";
//   - the query parameter key=name:secret;
//   - the query parameter accessToken=<token>.
//
// No credentials give empty Credentials and no error. A malformed
// Authorization header, an empty or repeated parameter, or credentials given
// in more than one place are BadRequest errors; an unsupported
// authorization scheme is an Unauthorized error. The credentials are not
// verified; pass them to [Authenticator.Authenticate].
func CredentialsFromHTTP(r *http.Request) (Credentials, error) {
	if r == nil {
		return Credentials{}, apierr.New(apierr.BadRequest, "no request")
	}
	var creds Credentials
	sources := 0
	if vals := r.Header.Values("Authorization"); len(vals) > 0 {
		if len(vals) > 1 {
			return Credentials{}, apierr.New(apierr.BadRequest, "more than one Authorization header")
		}
		c, err := parseAuthorization(vals[0])
		if err != nil {
			return Credentials{}, err
		}
		creds = c
		sources++
	}
	if r.URL != nil {
		q := r.URL.Query()
		for _, p := range []string{KeyParam, AccessTokenParam} {
			vs, ok := q[p]
			if !ok {
				continue
			}
			if len(vs) != 1 {
				return Credentials{}, apierr.New(apierr.BadRequest, "query parameter %s given more than once", p)
			}
			if vs[0] == "" {
				return Credentials{}, apierr.New(apierr.BadRequest, "query parameter %s is empty", p)
			}
			if p == KeyParam {
				creds = Credentials{Key: vs[0]}
			} else {
				creds = Credentials{Token: vs[0]}
			}
			sources++
		}
	}
	if sources > 1 {
		return Credentials{}, apierr.New(apierr.BadRequest,
			"credentials given more than once; use one of the Authorization header, %s or %s", KeyParam, AccessTokenParam)
	}
	return creds, nil
}

// parseAuthorization parses the value of an Authorization header.
func parseAuthorization(v string) (Credentials, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return Credentials{}, apierr.New(apierr.BadRequest, "empty Authorization header")
	}
	scheme, param, ok := strings.Cut(v, " ")
	param = strings.TrimSpace(param)
	if !ok || param == "" {
		return Credentials{}, apierr.New(apierr.BadRequest,
			"malformed Authorization header: expected \"Bearer <token>\" or \"Basic <base64 of name:secret>\"")
	}
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		if strings.Contains(param, ":") {
			return Credentials{Key: param}, nil
		}
		return Credentials{Token: param}, nil
	case strings.EqualFold(scheme, "Basic"):
		b, err := base64.StdEncoding.DecodeString(param)
		if err != nil {
			return Credentials{}, apierr.Wrap(err, apierr.BadRequest, "malformed Basic authorization: not valid base64")
		}
		name, secret, ok := strings.Cut(string(b), ":")
		if !ok {
			return Credentials{}, apierr.New(apierr.BadRequest, "malformed Basic authorization: expected base64 of name:secret")
		}
		if name == "" && secret == "" {
			return Credentials{}, apierr.New(apierr.BadRequest, "malformed Basic authorization: empty name and secret")
		}
		return Credentials{KeyName: name, KeySecret: secret}, nil
	default:
		return Credentials{}, apierr.New(apierr.Unauthorized, "unsupported authorization scheme (use Bearer or Basic)")
	}
}
