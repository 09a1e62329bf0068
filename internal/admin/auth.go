package admin

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// MinTokenLen is the shortest bearer token -admin-auth takes: 128 bits
// as hex, what `openssl rand -hex 16` prints.
const MinTokenLen = 32

// maxAuthFile bounds what LoadAuth reads: a token or a few users.
const maxAuthFile = 1 << 20

// Auth is who may use the admin listener (-admin-auth FILE): the holder of
// one bearer token, or users with bcrypt password hashes (HTTP basic
// authentication). The file is either
//
//	one line: the token (at least MinTokenLen characters)
//
// or, as `htpasswd -nB NAME` prints them, one user a line:
//
//	NAME:$2y$10$...   (a bcrypt hash)
//
// Blank lines and lines starting with # are ignored. The file must not be
// readable by its group or others (mode 0600 or 0400).
type Auth struct {
	token  [sha256.Size]byte // sha256 of the token, when users is nil
	users  map[string][]byte // name -> bcrypt hash
	verify *verifier         // basic: bcrypt, bounded and remembered
}

// Scheme is what a client sends: "Bearer" or "Basic".
func (a *Auth) Scheme() string {
	if a.users != nil {
		return "Basic"
	}
	return "Bearer"
}

// LoadAuth reads an -admin-auth file. Its errors say what to fix.
func LoadAuth(path string) (*Auth, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("admin: auth file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("admin: auth file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("admin: auth file %s is not a regular file", path)
	}
	// Stat follows symbolic links, as a Kubernetes secret volume's are:
	// the mode is the file's own.
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("admin: auth file %s has mode %04o: it must be readable by its owner only (chmod 600)", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxAuthFile+1))
	if err != nil {
		return nil, fmt.Errorf("admin: auth file: %w", err)
	}
	if len(data) > maxAuthFile {
		return nil, fmt.Errorf("admin: auth file %s is larger than %d bytes", path, maxAuthFile)
	}
	a, err := parseAuth(data)
	if err != nil {
		return nil, fmt.Errorf("admin: auth file %s: %w", path, err)
	}
	return a, nil
}

func parseAuth(data []byte) (*Auth, error) {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxAuthFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		return nil, errors.New("no token and no user")
	}
	if len(lines) == 1 && !strings.Contains(lines[0], ":$2") {
		tok := lines[0]
		if len(tok) < MinTokenLen {
			return nil, fmt.Errorf("token of %d characters: want at least %d (openssl rand -hex 32)", len(tok), MinTokenLen)
		}
		return &Auth{token: sha256.Sum256([]byte(tok))}, nil
	}
	a := &Auth{users: make(map[string][]byte), verify: newVerifier()}
	for i, line := range lines {
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d: want NAME:BCRYPT-HASH (htpasswd -nB NAME), or a single token line", i+1)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d: user %q: not a bcrypt hash (htpasswd -nB %s): %v", i+1, name, name, err)
		}
		if _, dup := a.users[name]; dup {
			return nil, fmt.Errorf("line %d: user %q given twice", i+1, name)
		}
		a.users[name] = []byte(hash)
	}
	return a, nil
}

// valid reports whether r carries the file's credential. Comparisons are
// constant-time: the token's by its SHA-256 (which also hides its length),
// a password's by bcrypt, also for an unknown user.
func (a *Auth) valid(r *http.Request) verdict {
	if a.users == nil {
		scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return wrong
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if subtle.ConstantTimeCompare(sum[:], a.token[:]) == 1 {
			return right
		}
		return wrong
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return wrong
	}
	return a.verify.check(r, a.users[user], user, pass)
}

// verdict is what a credential is found to be.
type verdict int

const (
	wrong verdict = iota
	right
	busy // not checked: too many bcrypt checks lately
)

// verifier checks basic credentials with bcrypt, which is slow on purpose
// (tens of milliseconds of CPU): one check at a time, so that guesses
// cannot take more than one core from the workers, and credentials found
// right are remembered (by their SHA-256), because the page sends them
// with every poll.
type verifier struct {
	sem    chan struct{} // one bcrypt at a time
	checks *bucket       // bcrypt checks allowed: checksBurst, then checksPerS a second
	now    func() time.Time

	mu   sync.Mutex
	good map[[sha256.Size]byte]struct{} // at most maxGood entries
}

// maxGood bounds the credentials remembered: a handful of operators.
const maxGood = 64

// Guesses from many addresses each stay within their own limit, but
// together could keep a core busy with bcrypt and slow the workers: past
// checksBurst checks, at most checksPerS a second run, for everyone. A
// credential already found right needs no check.
const (
	checksBurst = 10
	checksPerS  = 4
)

// dummyHash stands in for an unknown user's, so that the answer takes as
// long as for a known one: the hash of a random password, at
// bcrypt.DefaultCost. A constant, not made at init: that would cost every
// start of the binary (ctl, -check-upgrade) a bcrypt.
var dummyHash = []byte("$2a$10$uYiX50CkQd4uXzgb5KEsdO8wBlLsLWIpiOzUQ5usBdRSccDP7rWLm")

func newVerifier() *verifier {
	return &verifier{sem: make(chan struct{}, 1), good: make(map[[sha256.Size]byte]struct{}),
		checks: &bucket{tokens: checksBurst, at: time.Now()}, now: time.Now}
}

func (v *verifier) check(r *http.Request, hash []byte, user, pass string) verdict {
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	v.mu.Lock()
	_, known := v.good[key]
	allowed := known || v.take(v.now())
	v.mu.Unlock()
	switch {
	case known && hash != nil:
		return right
	case !allowed:
		return busy
	}
	select {
	case v.sem <- struct{}{}:
	case <-r.Context().Done():
		return busy
	}
	defer func() { <-v.sem }()
	if hash == nil {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(pass))
		return wrong
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return wrong
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.good) >= maxGood {
		clear(v.good)
	}
	v.good[key] = struct{}{}
	return right
}

// take takes one check from the budget, if there is one. Called with
// v.mu held.
func (v *verifier) take(now time.Time) bool {
	b := v.checks
	b.tokens = min(b.tokens+now.Sub(b.at).Seconds()*checksPerS, checksBurst)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
