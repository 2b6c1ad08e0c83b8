package config

// validate checks a route's callback settings; key is the route's key path,
// like "routes[3]". It resolves key paths against the config's directory and
// loads every key file the way the gateway will, so a wrong file fails the
// reload instead of the first notification.
func (r *RouteCallback) validate(c *checker, key string) {
	if r.Verify != "" && !c.oneOf(joinKey(key, "verify"), r.Verify, VerifyWechatPush, VerifyWechatPayV3, VerifyAlipay) {
		return
	}
	for _, t := range []struct {
		kind, table string
		set         bool
	}{
		{VerifyWechatPush, "wechat_push", r.WechatPush != nil},
		{VerifyWechatPayV3, "wechatpay", r.WechatPay != nil},
		{VerifyAlipay, "alipay", r.Alipay != nil},
	} {
		switch {
		case r.Verify == t.kind && !t.set:
			c.add(joinKey(key, t.table), "verify = %q needs a [routes.%s] table with the platform's keys", t.kind, t.table)
		case r.Verify != t.kind && t.set:
			c.add(joinKey(key, t.table), "is set but verify is %q; write verify = %q or remove the table", r.Verify, t.kind)
		}
	}
	switch {
	case r.Verify == VerifyWechatPush && r.WechatPush != nil:
		r.WechatPush.validate(c, joinKey(key, "wechat_push"))
	case r.Verify == VerifyWechatPayV3 && r.WechatPay != nil:
		r.WechatPay.validate(c, joinKey(key, "wechatpay"))
	case r.Verify == VerifyAlipay && r.Alipay != nil:
		r.Alipay.validate(c, joinKey(key, "alipay"))
	}
}

func (w *WechatPushCallback) validate(c *checker, key string) {
	if !validWechatToken(w.Token.Value()) {
		c.add(key+".token", "must be 3 to 32 letters or digits: the Token of the mini-program console (开发管理 > 消息推送); write it as \"${ENV_NAME}\" or \"file:/path\"")
	}
	if w.EncodingAESKey == "" {
		if w.AppID != "" {
			c.add(key+".appid", "is checked only in safe mode; set encoding_aes_key or remove appid")
		}
		if w.ForwardDecrypted {
			c.add(key+".forward_decrypted", "needs safe mode; set encoding_aes_key or remove forward_decrypted")
		}
		return
	}
	if _, err := WechatPushAESKey(w.EncodingAESKey); err != nil {
		c.add(key+".encoding_aes_key", "%v", err)
	}
	if w.AppID == "" {
		c.add(key+".appid", "is required in safe mode: the mini-program's appid (wx...), which ends every decrypted message")
	}
}

func validWechatToken(s string) bool {
	if len(s) < 3 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9') {
			return false
		}
	}
	return true
}

func (w *WechatPayCallback) validate(c *checker, key string) {
	if len(w.Keys) == 0 {
		c.add(key+".keys", `at least one key is required: { serial = "PUB_KEY_ID_...", public_key = "pub_key.pem" } or { certificate = "wechatpay_platform.pem" }`)
		return
	}
	if w.Window.Std() <= 0 {
		c.add(key+".window", "must be more than 0; the platform's own rule is 300s")
	}
	seen := make(map[string]int, len(w.Keys))
	for i := range w.Keys {
		k := &w.Keys[i]
		kk := indexKey(key+".keys", i)
		c.resolve(&k.PublicKey)
		c.resolve(&k.Certificate)
		serial, _, err := k.load("")
		if err != nil {
			c.add(kk, "%v", err)
			continue
		}
		if j, dup := seen[serial]; dup {
			c.add(kk+".serial", "serial %q is already used by keys[%d]; remove one", serial, j)
		}
		seen[serial] = i
	}
}

func (a *AlipayCallback) validate(c *checker, key string) {
	c.resolve(&a.PublicKey)
	if _, err := a.LoadPublicKey(""); err != nil {
		c.add(key+".public_key", "%v", err)
	}
	if len(a.SignTypes) == 0 {
		c.add(key+".sign_types", `must name at least one sign type: "RSA2" (SHA256withRSA) or "RSA" (SHA1withRSA)`)
	}
	for i, t := range a.SignTypes {
		c.oneOf(indexKey(key+".sign_types", i), t, "RSA2", "RSA")
	}
}

func (w *WechatPayCallback) setDefaults() { w.Window = DefaultWechatPayWindow }

func (a *AlipayCallback) setDefaults() { a.SignTypes = []string{DefaultAlipaySignType} }
