package demo

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// writeJSON writes v as a JSON response with the given status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header()["Content-Type"] = contentTypeJSON
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

type errorBody struct {
	Error string `json:"error"`
}

// intParam returns the query parameter name of r as an integer in [0, max].
// When the parameter is missing, malformed or out of range it answers 400
// with a JSON error naming the parameter, and reports false.
func intParam(w http.ResponseWriter, r *http.Request, name string, max int) (int, bool) {
	v, err := strconv.Atoi(r.URL.Query().Get(name))
	if err != nil || v < 0 || v > max {
		writeJSON(w, http.StatusBadRequest, errorBody{
			Error: fmt.Sprintf("%s must be an integer between 0 and %d", name, max),
		})
		return 0, false
	}
	return v, true
}
