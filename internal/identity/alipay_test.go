package identity

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"testing"
)

// FuzzAlipayAnswer feeds the parser of Alipay's answers anything: it must
// not panic, and it may vouch only for the identity of an answer Alipay's
// key signed (the seeds' open_id), however the bytes around it are mangled.
func FuzzAlipayAnswer(f *testing.F) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	signed := func(name, obj string) string {
		sum := sha256.Sum256([]byte(obj))
		sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
		if err != nil {
			f.Fatal(err)
		}
		return fmt.Sprintf(`{%q:%s,"sign":%q}`, name, obj, base64.StdEncoding.EncodeToString(sig))
	}
	const openid = "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo"
	for _, seed := range []string{
		signed("alipay_system_oauth_token_response", `{"access_token":"a","open_id":"`+openid+`","user_id":"2088000000000001","note":"http:\/\/例"}`),
		signed("alipay_system_oauth_token_response", `{"user_id":"`+openid+`","code":"10000"}`),
		signed("error_response", `{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.code-invalid"}`),
		`{"error_response":{"code":"20000","sub_code":"aop.unknow-error"}}`,
		`{"alipay_system_oauth_token_response":{"open_id":"x"},"sign":""}`,
		`{"alipay_system_oauth_token_response":null,"error_response":null}`,
	} {
		f.Add([]byte(seed))
	}
	a := &alipayLogin{alipay: &key.PublicKey}
	f.Fuzz(func(t *testing.T, body []byte) {
		ps, lerr := a.answer(body)
		if (ps == nil) == (lerr == nil) {
			t.Fatalf("session %v and error %v", ps, lerr)
		}
		if ps != nil && ps.OpenID != openid {
			t.Fatalf("vouched for %q, which Alipay's key never signed", ps.OpenID)
		}
	})
}
