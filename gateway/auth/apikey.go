package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/gateway/policy"
)

// APIKeyHeader is the header (REST) and metadata key (gRPC) of API keys.
const APIKeyHeader = "x-api-key"

// NewAPIKey returns a fresh random API key and the hex SHA-256 to store in
// the config or in Consul. Only the caller ever sees the key itself.
func NewAPIKey() (key, sha256Hex string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	key = "pk_" + base64.RawURLEncoding.EncodeToString(b[:])
	return key, HashAPIKey(key), nil
}

// HashAPIKey returns the hex SHA-256 of an API key. SHA-256 without salt is
// enough because keys are 256 random bits, not passwords.
func HashAPIKey(key string) string {
	h := hashKey(key)
	return hex.EncodeToString(h[:])
}

type apiKey struct {
	hash     [32]byte
	identity *policy.Identity
}

// keySet maps key hashes to their identities. It is replaced whole, never
// changed, so lookups need no lock.
type keySet map[[32]byte]apiKey

// apiKeys holds the keys from the config file and those from Consul KV.
type apiKeys struct {
	static keySet
	fromKV atomic.Pointer[keySet]
}

func newAPIKeys(cfg []APIKeyConfig) *apiKeys {
	s := keySet{}
	for _, k := range cfg {
		var h [32]byte
		b, _ := hex.DecodeString(k.SHA256) // validated before
		copy(h[:], b)
		s[h] = apiKey{hash: h, identity: &policy.Identity{Consumer: k.Consumer, Subject: k.Consumer, Scopes: k.Scopes, Method: KindAPIKey}}
	}
	return &apiKeys{static: s}
}

// hashKey is the SHA-256 of key, hashed from a copy on the stack when key
// fits in one: a []byte of a string over 32 bytes is otherwise a heap copy
// on every call, and API keys are usually longer.
func hashKey(key string) [sha256.Size]byte {
	var buf [128]byte
	if len(key) <= len(buf) {
		return sha256.Sum256(append(buf[:0], key...))
	}
	return sha256.Sum256([]byte(key))
}

// lookup finds the identity of a presented key. The map is keyed by the
// key's SHA-256, so its timing reveals nothing about the key; the final
// comparison is constant-time all the same.
func (a *apiKeys) lookup(key string) (*policy.Identity, bool) {
	h := hashKey(key)
	if k, ok := a.static[h]; ok && subtle.ConstantTimeCompare(k.hash[:], h[:]) == 1 {
		return k.identity, true
	}
	if kv := a.fromKV.Load(); kv != nil {
		if k, ok := (*kv)[h]; ok && subtle.ConstantTimeCompare(k.hash[:], h[:]) == 1 {
			return k.identity, true
		}
	}
	return nil, false
}

// kvEntry is the value stored under <prefix><sha256-hex> in Consul.
type kvEntry struct {
	Consumer string   `json:"consumer"`
	Scopes   []string `json:"scopes"`
}

// loadKV replaces the Consul-provided keys. A bad entry is logged and
// skipped; the others still load.
func (a *apiKeys) loadKV(prefix string, pairs api.KVPairs, log *slog.Logger) {
	s := keySet{}
	for _, p := range pairs {
		name := strings.TrimPrefix(p.Key, prefix)
		if name == "" || strings.HasSuffix(p.Key, "/") {
			continue // the folder itself
		}
		b, err := hex.DecodeString(name)
		if err != nil || len(b) != 32 {
			log.Warn("ignoring API key in consul: the key name must be the key's sha256 in hex", "key", p.Key)
			continue
		}
		var e kvEntry
		if err := json.Unmarshal(p.Value, &e); err != nil || e.Consumer == "" || strings.Contains(e.Consumer, "#") {
			log.Warn("ignoring API key in consul: value must be {\"consumer\": ..., \"scopes\": [...]} with no '#' in the consumer", "key", p.Key, "error", err)
			continue
		}
		var h [32]byte
		copy(h[:], b)
		s[h] = apiKey{hash: h, identity: &policy.Identity{Consumer: e.Consumer, Subject: e.Consumer, Scopes: e.Scopes, Method: KindAPIKey}}
	}
	a.fromKV.Store(&s)
	log.Info("API keys loaded from consul", "prefix", prefix, "keys", len(s))
}

// KVValue is the JSON to store in Consul for an API key.
func KVValue(consumer string, scopes []string) (string, error) {
	b, err := json.Marshal(kvEntry{Consumer: consumer, Scopes: scopes})
	if err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	return string(b), nil
}
