package gateway

import (
	"context"
	"errors"
	"testing"
)

func TestReadSettled(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name  string
		reads []string // "!" fails the read
		want  string
		err   error
	}{
		{"stable from the start", []string{"a", "a"}, "a", nil},
		{"empty, then written in two parts", []string{"", "x", "xy", "xy"}, "xy", nil},
		{"still changing after every try", []string{"1", "2", "3", "4"}, "", errStillChanging},
		{"a read fails", []string{"a", "!"}, "", boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			read := func() ([]byte, error) {
				if n >= len(tt.reads) {
					t.Fatalf("read %d times, the script has %d", n+1, len(tt.reads))
				}
				r := tt.reads[n]
				n++
				if r == "!" {
					return nil, boom
				}
				return []byte(r), nil
			}
			got, err := readSettled(context.Background(), read, 0, len(tt.reads)-1)
			if !errors.Is(err, tt.err) || string(got) != tt.want {
				t.Fatalf("readSettled = %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}
