package config

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The values of a route's verify key.
const (
	VerifyWechatPush  = "wechat_push"
	VerifyWechatPayV3 = "wechatpay_v3"
	VerifyAlipay      = "alipay"
)

// RouteCallback is a route's platform-callback verification: edge checks the
// platform's signature before the request reaches the upstream. Only the table
// named by Verify is used.
type RouteCallback struct {
	// Verify is "wechat_push", "wechatpay_v3" or "alipay"; empty: no check.
	Verify     string              `toml:"verify"`
	WechatPush *WechatPushCallback `toml:"wechat_push"`
	WechatPay  *WechatPayCallback  `toml:"wechatpay"`
	Alipay     *AlipayCallback     `toml:"alipay"`
}

// WechatPushCallback is WeChat message push ("消息推送"). Without an
// EncodingAESKey the route accepts plaintext mode only; with one, safe mode
// only (msg_signature over the ciphertext, trailing appid checked).
type WechatPushCallback struct {
	Token Secret `toml:"token"`
	// EncodingAESKey is the 43-character key of safe mode.
	EncodingAESKey Secret `toml:"encoding_aes_key"`
	// AppID must end every decrypted safe-mode message. Required with
	// EncodingAESKey.
	AppID string `toml:"appid"`
	// ForwardDecrypted sends the upstream the decrypted message instead of
	// the encrypted envelope (safe mode only).
	ForwardDecrypted bool `toml:"forward_decrypted"`
}

// WechatPayCallback is WeChat Pay API v3 notifications.
type WechatPayCallback struct {
	// Keys are the platform's verification keys; Wechatpay-Serial picks one.
	// Several are normal while the platform migrates from certificates to
	// public keys.
	Keys []WechatPayKey `toml:"keys"`
	// Window is how far Wechatpay-Timestamp may be from now. Default 300s
	// (the platform's own rule).
	Window Duration `toml:"window"`
}

// DefaultWechatPayWindow is WechatPayCallback.Window when not set.
const DefaultWechatPayWindow = Duration(300 * time.Second)

// WechatPayKey is one verification key: exactly one of PublicKey (a
// "PUB_KEY_ID_..." key, Serial required) or Certificate (a platform
// certificate; Serial defaults to the certificate's serial number).
type WechatPayKey struct {
	Serial      string `toml:"serial"`
	PublicKey   string `toml:"public_key"`  // PEM file
	Certificate string `toml:"certificate"` // PEM file
}

// AlipayCallback is Alipay asynchronous notifications.
type AlipayCallback struct {
	// PublicKey is a file holding Alipay's public key: PEM, the bare base64
	// string the Alipay console shows, or the Alipay public key certificate.
	PublicKey string `toml:"public_key"`
	// SignTypes are the accepted sign_type values. Default ["RSA2"]; add
	// "RSA" (SHA1withRSA) only for apps that still use it.
	SignTypes []string `toml:"sign_types"`
	// AppID, when set, must equal the notification's app_id.
	AppID string `toml:"app_id"`
}

// DefaultAlipaySignType is the one sign type accepted when SignTypes is not
// set: RSA2, because SHA1withRSA is legacy.
const DefaultAlipaySignType = "RSA2"

// resolvePath makes a relative path relative to dir, the config's directory.
func resolvePath(dir, path string) string {
	if filepath.IsAbs(path) || dir == "" {
		return path
	}
	return filepath.Join(dir, path)
}

// LoadKeys reads every key file and returns the keys by upper-case serial.
// Relative paths are resolved against dir; Parse has already made them
// absolute, so the gateway may pass "".
func (c *WechatPayCallback) LoadKeys(dir string) (map[string]*rsa.PublicKey, error) {
	keys := make(map[string]*rsa.PublicKey, len(c.Keys))
	for i, k := range c.Keys {
		serial, pub, err := k.load(dir)
		if err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		if _, dup := keys[serial]; dup {
			return nil, fmt.Errorf("keys[%d]: serial %q is configured twice", i, serial)
		}
		keys[serial] = pub
	}
	return keys, nil
}

func (k WechatPayKey) load(dir string) (string, *rsa.PublicKey, error) {
	serial := strings.ToUpper(strings.TrimSpace(k.Serial))
	switch {
	case k.PublicKey != "" && k.Certificate != "":
		return "", nil, errors.New("set public_key or certificate, not both")
	case k.PublicKey != "":
		if serial == "" {
			return "", nil, errors.New(`serial is required with public_key: write the key's id, e.g. "PUB_KEY_ID_0114..."`)
		}
		pub, err := readRSAPublicKey(resolvePath(dir, k.PublicKey), false)
		if err != nil {
			return "", nil, fmt.Errorf("public_key: %w", err)
		}
		return serial, pub, nil
	case k.Certificate != "":
		cert, err := readCertificate(resolvePath(dir, k.Certificate))
		if err != nil {
			return "", nil, fmt.Errorf("certificate: %w", err)
		}
		certSerial := strings.ToUpper(cert.SerialNumber.Text(16))
		if serial != "" && serial != certSerial {
			return "", nil, fmt.Errorf("serial %q does not match the certificate's serial %q; remove serial or fix it", serial, certSerial)
		}
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return "", nil, fmt.Errorf("certificate %s does not hold an RSA key", k.Certificate)
		}
		return certSerial, pub, nil
	default:
		return "", nil, errors.New("set public_key (with serial) or certificate")
	}
}

// LoadPublicKey reads Alipay's public key; a relative path is resolved
// against dir (Parse has already made it absolute).
func (c *AlipayCallback) LoadPublicKey(dir string) (*rsa.PublicKey, error) {
	if c.PublicKey == "" {
		return nil, errors.New("public_key is required: the file holding Alipay's public key (not the app's own key)")
	}
	pub, err := readRSAPublicKey(resolvePath(dir, c.PublicKey), true)
	if err != nil {
		return nil, fmt.Errorf("public_key: %w", err)
	}
	return pub, nil
}

// readRSAPublicKey accepts a PEM public key (PKIX or PKCS#1), a PEM
// certificate, and, when bareBase64 is set, the unwrapped base64 DER the
// Alipay console hands out.
func readRSAPublicKey(path string, bareBase64 bool) (*rsa.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	block, _ := pem.Decode(data)
	var key any
	switch {
	case block == nil && bareBase64:
		der, derr := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(data)), ""))
		if derr != nil {
			return nil, fmt.Errorf("%s is neither PEM nor a base64 public key", path)
		}
		key, err = x509.ParsePKIXPublicKey(der)
	case block == nil:
		return nil, fmt.Errorf("%s holds no PEM block; expected \"-----BEGIN PUBLIC KEY-----\"", path)
	case block.Type == "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case block.Type == "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case block.Type == "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("%s holds a %q PEM block; expected the platform's PUBLIC KEY (is this a private key?)", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s is not an RSA public key", path)
	}
	return pub, nil
}

func readCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading certificate file: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM CERTIFICATE block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return cert, nil
}

// WechatPushAESKey decodes the EncodingAESKey (43 base64 characters, no
// padding) into the 32-byte AES key.
func WechatPushAESKey(s Secret) ([]byte, error) {
	v := s.Value()
	if len(v) != 43 {
		return nil, fmt.Errorf("encoding_aes_key must be 43 characters, got %d; copy it from the mini-program console (开发管理 > 消息推送)", len(v))
	}
	key, err := base64.StdEncoding.DecodeString(v + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("encoding_aes_key is not base64 (letters, digits, + and /); copy it again from the mini-program console")
	}
	return key, nil
}
