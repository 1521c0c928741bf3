package engine

import (
	"io"
	"net/http"
	"net/http/httptest"
)

// apiRequest is a request for calling the handler in process, as a
// same-origin client on loopback sends it: Host localhost, and a YAML
// body type on a POST.
func apiRequest(method, target string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	r.Host = "localhost"
	if method == http.MethodPost {
		r.Header.Set("Content-Type", "application/yaml")
	}
	return r
}
