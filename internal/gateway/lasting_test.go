package gateway

import (
	"testing"

	"edge/internal/apierror"
	"edge/internal/config"
)

func TestViolationKind(t *testing.T) {
	for code, want := range map[apierror.Code]string{
		apierror.AuthMissing:    config.ViolationToken,
		apierror.BadSignature:   config.ViolationSignature,
		apierror.StaleTimestamp: config.ViolationReplay,
		apierror.Replayed:       config.ViolationReplay,
		apierror.TokenExpired:   "",
		apierror.Forbidden:      "",
		apierror.BodyTooLarge:   "",
	} {
		if got := violationKind(code); got != want {
			t.Errorf("violationKind(%d) = %q, want %q", code, got, want)
		}
	}
}
