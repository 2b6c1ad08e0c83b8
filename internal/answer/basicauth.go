package answer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"edge/internal/apierror"
	"edge/internal/reqctx"
)

// BasicAuth checks HTTP basic credentials against an htpasswd file of
// bcrypt hashes (htpasswd -B). The file is read when the config is
// compiled, so a reload picks up an edited file.
type BasicAuth struct {
	users     map[string][]byte
	challenge []string
	forward   bool
	// dummy is compared against when the user is unknown, so an unknown
	// name costs the same bcrypt work as a wrong password and response
	// times do not tell which names exist. It has the cost of the file's
	// hashes and is made on first use, not on every reload.
	dummy func() []byte

	// verified remembers credentials bcrypt has accepted, by their SHA-256:
	// bcrypt costs tens of milliseconds by design, and a page behind
	// basic auth sends the same header with every asset. Only accepted
	// credentials enter, so a client cannot fill it with guesses; it is
	// capped all the same and lives as long as the snapshot.
	mu       sync.Mutex
	verified map[[sha256.Size]byte]struct{}
}

// maxVerified caps BasicAuth.verified; when full it starts over.
const maxVerified = 1024

// LoadBasicAuth reads an htpasswd file. realm is shown by browsers in
// the login prompt; forward passes the Authorization header upstream.
func LoadBasicAuth(path, realm string, forward bool) (*BasicAuth, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	users, err := ParseHtpasswd(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cost := bcrypt.DefaultCost
	for _, h := range users {
		cost, _ = bcrypt.Cost(h)
		break
	}
	return &BasicAuth{
		users: users,
		dummy: sync.OnceValue(func() []byte {
			h, _ := bcrypt.GenerateFromPassword([]byte("edge-unknown-user"), cost)
			return h
		}),
		challenge: []string{"Basic realm=" + strconv.Quote(realm) + `, charset="UTF-8"`},
		forward:   forward,
		verified:  make(map[[sha256.Size]byte]struct{}),
	}, nil
}

// ParseHtpasswd reads "name:hash" lines; blank lines and lines starting
// with # are skipped. Only bcrypt hashes ($2y$, $2b$, $2a$) are accepted:
// htpasswd's other formats (MD5 apr1, SHA-1, crypt) are too fast to
// guess against.
func ParseHtpasswd(data []byte) (map[string][]byte, error) {
	users := make(map[string][]byte)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d: not name:hash", n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d (%s): not a bcrypt hash; create the file with `htpasswd -B -c FILE %s`", n, name, name)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("line %d: %s is listed twice", n, name)
		}
		users[name] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("no users; add one with `htpasswd -B FILE NAME`")
	}
	return users, nil
}

// Check lets the request on when it carries the credentials of a listed
// user, removing the Authorization header unless it is forwarded;
// otherwise it answers 401 with the challenge and the JSON body.
func (b *BasicAuth) Check(w http.ResponseWriter, r *http.Request) bool {
	if auth := r.Header["Authorization"]; len(auth) == 1 && b.valid(auth[0]) {
		if !b.forward {
			delete(r.Header, "Authorization")
		}
		return true
	}
	if info := reqctx.FromRequest(r); info != nil {
		info.Reason = "basic_auth"
	}
	w.Header()["Www-Authenticate"] = b.challenge
	apierror.Write(w, r, apierror.BasicAuthFailed, "basic authentication required")
	return false
}

func (b *BasicAuth) valid(header string) bool {
	scheme, enc, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	enc = strings.TrimSpace(enc)
	sum := sha256.Sum256([]byte(enc))
	b.mu.Lock()
	_, seen := b.verified[sum]
	b.mu.Unlock()
	if seen {
		return true
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return false
	}
	name, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return false
	}
	hash, known := b.users[name]
	if !known {
		hash = b.dummy()
	}
	// CompareHashAndPassword compares the hashes in constant time.
	match := bcrypt.CompareHashAndPassword(hash, []byte(pass)) == nil
	if !known || !match {
		return false
	}
	b.mu.Lock()
	if len(b.verified) >= maxVerified {
		clear(b.verified)
	}
	b.verified[sum] = struct{}{}
	b.mu.Unlock()
	return true
}
