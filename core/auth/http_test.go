package auth

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/switchboardhq/switchboard/core/apierr"
)

func TestCredentialsFromHTTP(t *testing.T) {
	basic := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	const jwtLike = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln"
	tests := []struct {
		name    string
		target  string
		headers []string
		want    Credentials
		code    apierr.Code
	}{
		{name: "none", target: "/v1/channels"},
		{name: "bearer token", headers: []string{"Bearer " + jwtLike}, want: Credentials{Token: jwtLike}},
		{name: "bearer lower case", headers: []string{"bearer " + jwtLike}, want: Credentials{Token: jwtLike}},
		{name: "bearer extra spaces", headers: []string{"  Bearer   " + jwtLike + "  "}, want: Credentials{Token: jwtLike}},
		{name: "bearer key", headers: []string{"Bearer app:se:cret"}, want: Credentials{Key: "app:se:cret"}},
		{name: "basic", headers: []string{basic("app:se:cret")}, want: Credentials{KeyName: "app", KeySecret: "se:cret"}},
		{name: "basic token as password", headers: []string{basic(":" + jwtLike)}, want: Credentials{KeySecret: jwtLike}},
		{name: "query key", target: "/v1/sse?channels=a&key=app%3Asecret", want: Credentials{Key: "app:secret"}},
		{name: "query token", target: "/v1/sse?accessToken=" + jwtLike, want: Credentials{Token: jwtLike}},
		{name: "empty header", headers: []string{""}, code: apierr.BadRequest},
		{name: "scheme only", headers: []string{"Bearer"}, code: apierr.BadRequest},
		{name: "scheme and spaces", headers: []string{"Bearer   "}, code: apierr.BadRequest},
		{name: "raw key without scheme", headers: []string{"app:secret"}, code: apierr.BadRequest},
		{name: "unknown scheme", headers: []string{"Digest username=app"}, code: apierr.Unauthorized},
		{name: "basic not base64", headers: []string{"Basic !!!"}, code: apierr.BadRequest},
		{name: "basic url-safe base64", headers: []string{"Basic " + base64.URLEncoding.EncodeToString([]byte("a:\xfb\xff"))}, code: apierr.BadRequest},
		{name: "basic without colon", headers: []string{basic("appsecret")}, code: apierr.BadRequest},
		{name: "basic empty pair", headers: []string{basic(":")}, code: apierr.BadRequest},
		{name: "two headers", headers: []string{"Bearer " + jwtLike, "Bearer " + jwtLike}, code: apierr.BadRequest},
		{name: "header and query", target: "/?key=app:secret", headers: []string{"Bearer " + jwtLike}, code: apierr.BadRequest},
		{name: "key and token params", target: "/?key=app:secret&accessToken=" + jwtLike, code: apierr.BadRequest},
		{name: "repeated key", target: "/?key=a:b&key=a:b", code: apierr.BadRequest},
		{name: "empty key", target: "/?key=", code: apierr.BadRequest},
		{name: "empty token", target: "/?accessToken", code: apierr.BadRequest},
	}
	for _, tt := range tests {
		target := tt.target
		if target == "" {
			target = "/"
		}
		r := httptest.NewRequest(http.MethodGet, target, nil)
		for _, h := range tt.headers {
			r.Header.Add("Authorization", h)
		}
		got, err := CredentialsFromHTTP(r)
		wantCode(t, tt.name, err, tt.code)
		if err == nil && got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
	_, err := CredentialsFromHTTP(nil)
	wantCode(t, "nil request", err, apierr.BadRequest)
	if _, err := CredentialsFromHTTP(&http.Request{Header: http.Header{}}); err != nil {
		t.Errorf("request without URL: %v", err)
	}
}

func TestCredentialsFromHTTPAuthenticate(t *testing.T) {
	a, _ := newTestAuth(t)
	tok, _, err := a.IssueToken(keyIdentity(t, a, chatKey), TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	basic := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct{ target, header string }{
		{"/", "Bearer " + tok},
		{"/", "Bearer chat:" + chatKey.Secret},
		{"/", basic("chat:" + chatKey.Secret)},
		{"/", basic(":" + tok)},
		{"/?key=chat:" + chatKey.Secret, ""},
		{"/?accessToken=" + tok, ""},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.target, nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		c, err := CredentialsFromHTTP(r)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.target, tc.header, err)
		}
		id, err := a.Authenticate(c)
		if err != nil || id.KeyName != "chat" {
			t.Errorf("%s %s: %+v, %v", tc.target, tc.header, id, err)
		}
	}
}
