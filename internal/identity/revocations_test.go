package identity

import (
	"encoding/hex"
	"strconv"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// TestRevocationEvents: a message from another replica revokes until the
// token's expiry; malformed ones change nothing; the copy stays bounded.
func TestRevocationEvents(t *testing.T) {
	clock := testpeer.NewClock(time.Unix(1_700_000_000, 0))
	r := NewRevocations(nil, nil, nil, clock.Now)
	id := TokenID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	exp := strconv.FormatInt(clock.Now().Add(time.Hour).Unix(), 10)
	for _, bad := range []string{"", hex.EncodeToString(id[:]), "zz " + exp, hex.EncodeToString(id[:]) + "00 " + exp,
		hex.EncodeToString(id[:4]) + " " + exp, hex.EncodeToString(id[:]) + " soon"} {
		r.HandleEvent(bad)
	}
	if r.Len() != 0 {
		t.Fatalf("malformed messages left %d revocations", r.Len())
	}
	r.HandleEvent(hex.EncodeToString(id[:]) + " " + exp)
	if !r.has(id) {
		t.Fatal("a revocation message did not revoke")
	}
	clock.Advance(time.Hour)
	if r.has(id) {
		t.Error("a revocation outlived its token")
	}
	r.HandleEvent(hex.EncodeToString(id[:]) + " " + strconv.FormatInt(clock.Now().Unix()-1, 10))
	if r.has(id) {
		t.Error("an already expired revocation was taken")
	}
}

// TestRevocationsBounded: past the cap, the revocation closest to its
// expiry gives way.
func TestRevocationsBounded(t *testing.T) {
	clock := testpeer.NewClock(time.Unix(1_700_000_000, 0))
	r := NewRevocations(nil, nil, nil, clock.Now)
	base := clock.Now().Unix() + 3600
	for i := range maxHeldRevocations + 10 {
		var id TokenID
		id[0], id[1], id[2] = byte(i), byte(i>>8), byte(i>>16)
		r.add(id, base+int64(i))
	}
	if r.Len() != maxHeldRevocations {
		t.Fatalf("held %d revocations, cap %d", r.Len(), maxHeldRevocations)
	}
	if r.has(TokenID{0}) {
		t.Error("the revocation closest to its expiry was kept past the cap")
	}
}

// FuzzRevocationEvent: whatever Redis carries, a message never panics.
func FuzzRevocationEvent(f *testing.F) {
	f.Add("0102030405060708090a0b0c 1700003600")
	f.Add("zz 1")
	r := NewRevocations(nil, nil, nil, nil)
	f.Fuzz(func(t *testing.T, msg string) {
		r.HandleEvent(msg)
		if r.Len() > maxHeldRevocations {
			t.Fatal("over the cap")
		}
	})
}
