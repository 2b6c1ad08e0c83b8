package config

import "testing"

// withAB is withA plus upstream "b" on lines 4-6; a route's lines start at 7.
func withAB(lines ...string) string {
	return withA(append([]string{`[[upstreams]]`, `name = "b"`, `targets = ["127.0.0.1:3001"]`}, lines...)...)
}

func TestReleaseProblems(t *testing.T) {
	route := []string{`[[routes]]`, `name = "r"`, `upstream = "a"`}
	cases := []struct {
		name string
		text string
		want []want
	}{
		{"unknown upstream", withAB(append(route, `[routes.release]`, `upstream = "c"`, `weight = 10`)...),
			[]want{{"routes[0].release.upstream", 11, `no upstream named "c"; define it under [[upstreams]] or use one of: "a", "b"`}}},
		{"same upstream", withAB(append(route, `[routes.release]`, `upstream = "a"`)...),
			[]want{{"routes[0].release.upstream", 11, `"a" is already the route's upstream`}}},
		{"no upstream", withAB(append(route, `[routes.release]`, `weight = 10`)...),
			[]want{{"routes[0].release.upstream", 10, "must name the next version's upstream"}}},
		{"weight above 100", withAB(append(route, `[routes.release]`, `upstream = "b"`, `weight = 101`)...),
			[]want{{"routes[0].release.weight", 12, "101 is not a percent"}}},
		{"negative weight", withAB(append(route, `[routes.release]`, `upstream = "b"`, `weight = -1`)...),
			[]want{{"routes[0].release.weight", 12, "-1 is not a percent"}}},
		{"unknown by", withAB(append(route, `auth = "jwt"`, `[routes.release]`, `upstream = "b"`, `by = "user"`)...),
			[]want{
				{"routes[0].jwt", 7, `needs a [routes.jwt] table`},
				{"routes[0].release.by", 13, `"user" is not a way to choose`},
			}},
		{"openids without auth", withAB(append(route, `[routes.release]`, `upstream = "b"`, `openids = ["o-1"]`)...),
			[]want{{"routes[0].release.openids", 12, "needs a verified openid; set auth on the route"}}},
		{"by openid without auth", withAB(append(route, `[routes.release]`, `upstream = "b"`, `by = "openid"`, `weight = 5`)...),
			[]want{{"routes[0].release.by", 12, `"openid" needs a verified openid`}}},
		{"empty tester", withAB(append(route, `auth = "trusted_header"`, `[routes.release]`, `upstream = "b"`, `openids = ["o-1", ""]`)...),
			[]want{
				{"routes[0].auth", 10, "none are configured"},
				{"routes[0].release.openids[1]", 13, "is empty"},
			}},
		{"release on a static route", withAB(`[[routes]]`, `name = "r"`, `respond = { body = "x" }`, `[routes.release]`, `upstream = "b"`),
			[]want{{"routes[0].release", 10, "only applies to routes with an upstream"}}},
		{"unknown key", withAB(append(route, `[routes.release]`, `upstream = "b"`, `wieght = 5`)...),
			[]want{{"routes[0].release.wieght", 12, `did you mean "weight"?`}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, e := parseIn(t, testDir(t), tc.text)
			wantProblems(t, e, tc.want)
		})
	}
}

func TestReleaseDefaults(t *testing.T) {
	cfg, e := parseIn(t, testDir(t), withAB(`[[routes]]`, `name = "r"`, `upstream = "a"`, `[routes.release]`, `upstream = "b"`))
	if e != nil {
		t.Fatal(e)
	}
	rel := cfg.Routes[0].Release
	if rel == nil || rel.By != ReleaseByRequest || rel.Weight != 0 || rel.Salt != "" {
		t.Fatalf("release = %+v, want by request, weight 0, no salt", rel)
	}
}
