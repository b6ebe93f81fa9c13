// Package httperr renders errors in the JSON form every HTTP endpoint of
// Switchboard shares:
//
//	{"error":{"code":40013,"statusCode":400,"message":"..."}}
//
// The code is a stable apierr code; causes wrapped inside the error are
// never shown to clients.
package httperr

import (
	"encoding/json"
	"net/http"

	"github.com/switchboardhq/switchboard/core/apierr"
)

// Body is the JSON form of an error.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is the content of Body.
type Detail struct {
	Code       apierr.Code `json:"code"`
	StatusCode int         `json:"statusCode"`
	Message    string      `json:"message"`
}

// Render returns the HTTP status of err and its JSON body.
func Render(err error) (status int, body []byte) {
	e := apierr.From(err)
	status = e.StatusCode
	if status < 400 || status > 599 {
		status = e.Code.Status()
	}
	b, merr := json.Marshal(Body{Error: Detail{Code: e.Code, StatusCode: status, Message: e.Message}})
	if merr != nil {
		// Marshalling a number and strings cannot fail; stay well formed.
		return http.StatusInternalServerError, []byte(`{"error":{"code":50000,"statusCode":500,"message":"internal error"}}`)
	}
	return status, b
}

// Write replies with err in its JSON form and returns the status sent. An
// Unauthorized reply carries a WWW-Authenticate challenge.
func Write(w http.ResponseWriter, err error) int {
	status, body := Render(err)
	h := w.Header()
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="switchboard"`)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
	return status
}
