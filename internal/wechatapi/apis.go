package wechatapi

import (
	"bytes"
	"encoding/json"
)

// knownAPIs are the server APIs mini-program backends call most; they are
// the values of the api label, every other path counts as "other" so that
// no path from a request becomes a label.
var knownAPIs = map[string]bool{
	"/cgi-bin/message/subscribe/send":               true,
	"/cgi-bin/message/custom/send":                  true,
	"/cgi-bin/media/upload":                         true,
	"/cgi-bin/media/get":                            true,
	"/cgi-bin/wxaapp/createwxaqrcode":               true,
	"/wxa/getwxacode":                               true,
	"/wxa/getwxacodeunlimit":                        true,
	"/wxa/generatescheme":                           true,
	"/wxa/generate_urllink":                         true,
	"/wxa/genwxashortlink":                          true,
	"/wxa/msg_sec_check":                            true,
	"/wxa/media_check_async":                        true,
	"/wxa/business/getuserphonenumber":              true,
	"/wxa/getpaidunionid":                           true,
	"/wxa/business/getuserencryptkey":               true,
	"/wxa/sec/order/upload_shipping_info":           true,
	"/cgi-bin/openapi/quota/get":                    true,
	"/cgi-bin/openapi/rid/get":                      true,
	"/wxa/servicemarket":                            true,
	"/cgi-bin/message/wxopen/template/uniform_send": true,
}

// apiLabel is the api label of a request path.
func apiLabel(path string) string {
	if knownAPIs[path] {
		return path
	}
	return "other"
}

// isTokenError reports whether WeChat refused the access_token itself:
// 40001 invalid credential, 40014 invalid access_token, 42001 expired. The
// call did nothing then, so it may be repeated with a new token.
func isTokenError(code int) bool { return code == 40001 || code == 40014 || code == 42001 }

// classify reads an answer's errcode: body is the whole answer when
// complete is true, else its first bytes (a long answer is a file, not an
// error object).
func classify(status int, body []byte, complete bool) (class string, errcode int) {
	if status != 200 {
		return "http_error", 0
	}
	b := bytes.TrimSpace(body)
	if !complete || len(b) == 0 || b[0] != '{' {
		return "ok", 0
	}
	var ans struct {
		Errcode int `json:"errcode"`
	}
	if json.Unmarshal(b, &ans) != nil {
		return "ok", 0
	}
	switch c := ans.Errcode; {
	case c == 0:
		return "ok", 0
	case isTokenError(c):
		return "token", c
	case c == -1:
		return "busy", c
	case c >= 45000 && c < 46000:
		return "quota", c
	default:
		return "error", c
	}
}
