package httphdr

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// ErrHeadTooLarge: the reader's buffer filled up before the head ended.
var ErrHeadTooLarge = errors.New("message head larger than the read buffer")

// HeadEnd returns the length of the message head at the start of buf
// (through the empty line that ends it), or -1 when buf holds no complete
// head. A bare LF counts as a line end here so that such heads are found,
// and refused by NextLine, at once instead of waiting for a CRLF that never
// comes.
func HeadEnd(buf []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(buf) && buf[i] == '\n':
			return i + 1
		case i+1 < len(buf) && buf[i] == '\r' && buf[i+1] == '\n':
			return i + 2
		}
	}
}

// PeekHead waits until br holds a whole message head and returns its
// length, leaving it unread. A connection that ends inside a head is
// io.ErrUnexpectedEOF, as net/http reports it.
func PeekHead(br *bufio.Reader) (int, error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		if n := HeadEnd(buf); n >= 0 {
			return n, nil
		}
		if br.Buffered() >= br.Size() {
			return 0, ErrHeadTooLarge
		}
		had := br.Buffered()
		if _, err := br.Peek(had + 1); err != nil {
			if had > 0 && err == io.EOF {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
}

// NextLine splits the first CRLF-terminated line off s; a line ended by a
// bare LF is not one.
func NextLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 1 || s[i-1] != '\r' {
		return "", "", false
	}
	return s[:i-1], s[i+1:], true
}

// ParseLength reads a Content-Length value as net/http does: digits only,
// no sign, no list.
func ParseLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// LengthBody is a message body of known length read from a connection's
// reader: it ends with io.EOF on its last byte, and with
// io.ErrUnexpectedEOF when the connection ends first.
type LengthBody struct {
	R         *bufio.Reader
	Remaining int64
}

func (b *LengthBody) Read(p []byte) (int, error) {
	if b.Remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.Remaining {
		p = p[:b.Remaining]
	}
	n, err := b.R.Read(p)
	b.Remaining -= int64(n)
	if err == io.EOF && b.Remaining > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && b.Remaining == 0 {
		err = io.EOF
	}
	return n, err
}
