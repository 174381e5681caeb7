package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"strconv"
	"strings"
)

// SecretPrefix starts every Standard Webhooks signing secret.
const SecretPrefix = "whsec_"

// errMalformedSecret never quotes the secret.
var errMalformedSecret = errors.New(`webhook: malformed secret: want "whsec_" followed by standard base64 (with padding) of at least one byte`)

// ParseSecret decodes a Standard Webhooks secret, "whsec_" followed by the
// key in standard base64 with padding (the form the official libraries
// accept), and returns the key. The error never quotes the secret.
func ParseSecret(secret string) ([]byte, error) {
	enc, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, errMalformedSecret
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(key) == 0 {
		return nil, errMalformedSecret
	}
	return key, nil
}

// Sign returns the Standard Webhooks signature header value
// "v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>", where secret is the
// decoded key (see ParseSecret), id the webhook-id and ts the
// webhook-timestamp in Unix seconds.
func Sign(secret []byte, id string, ts int64, body []byte) string {
	return signWith(hmac.New(sha256.New, secret), id, ts, body)
}

// signWith signs with m, a fresh or Reset HMAC-SHA256 keyed with the secret.
func signWith(m hash.Hash, id string, ts int64, body []byte) string {
	var buf [64]byte
	b := append(buf[:0], id...)
	b = append(b, '.')
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, '.')
	m.Write(b)
	m.Write(body)
	var sum [sha256.Size]byte
	out := make([]byte, 0, 3+base64.StdEncoding.EncodedLen(sha256.Size))
	out = append(out, "v1,"...)
	out = base64.StdEncoding.AppendEncode(out, m.Sum(sum[:0]))
	return string(out)
}
