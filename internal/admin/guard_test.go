package admin

import "testing"

func TestAdminHostAllowed(t *testing.T) {
	listed := []string{"edge-admin.internal"}
	for host, want := range map[string]bool{
		"": true, "127.0.0.1": true, "127.0.0.1:9180": true, "[::1]": true, "[::1]:9180": true, "::1": true,
		"10.0.0.5:9180": true, "localhost": true, "localhost.:9180": true, "LOCALHOST": true,
		"edge-admin.internal": true, "Edge-Admin.Internal:9180": true,
		"attacker.example": false, "127.0.0.1.attacker.example": false, "localhost.attacker.example:9180": false,
		"edge-admin.internal.attacker.example": false, "sub.localhost": false,
	} {
		if got := HostAllowed(host, listed); got != want {
			t.Errorf("Host %q: allowed %v, want %v", host, got, want)
		}
	}
}
