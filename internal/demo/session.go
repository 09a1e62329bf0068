package demo

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
)

// newSessionHandler makes up a session id, claims it for this worker's
// slot (under -sticky cookie:sid the supervisor then routes the id here,
// though no hash would) and sets it as the cookie sid. The body is the
// slot.
func newSessionHandler(info Info) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		var b [12]byte
		rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		if err := info.Claim(id); err != nil {
			http.Error(w, "claim: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header()["Set-Cookie"] = []string{"sid=" + id + "; Path=/; HttpOnly"}
		w.Header()["Content-Type"] = contentTypeText
		w.Write(strconv.AppendInt(nil, int64(info.WorkerID), 10))
	}
}
