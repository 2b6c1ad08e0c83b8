package admin

import "testing"

func TestShortOpenID(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"oAbCdEfGhIjKlMnOpQrStUvWxYz", "oAbC…WxYz"},
		{"o-short", "o-short"},
		{"0123456789", "0123456789"},
		{"01234567890", "0123…7890"},
		{"用户标识一二三四五六七", "用户标识…四五六七"},
	} {
		if got := ShortOpenID(tc.in); got != tc.want {
			t.Errorf("ShortOpenID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
