package engine

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// APIAuthConfig names the API's bearer tokens, by scope: read (segments,
// sizes, memberships, member lists), pii (read, plus customer profiles
// and traits unmasked) and admin (read, plus erasure, rules reload and
// preview). Each scope may hold several tokens at once, so one can be
// rotated without a restart. A token entry is "NAME:TOKEN" (NAME shows in
// the audit log) or a bare TOKEN (named SCOPE-N); a token is at least 16
// characters, without spaces, commas or colons. Tokens are never logged.
type APIAuthConfig struct {
	// ReadTokens, PIITokens and AdminTokens are token entries given
	// inline, best through the environment (SEGD_API_AUTH_READ_TOKENS
	// and so on, comma-separated). They are read once, at start. Default
	// none.
	ReadTokens  []string `yaml:"read_tokens"`
	PIITokens   []string `yaml:"pii_tokens"`
	AdminTokens []string `yaml:"admin_tokens"`
	// ReadTokensFile, PIITokensFile and AdminTokensFile are files of
	// token entries, one per line (blank lines and lines starting with #
	// are skipped), e.g. keys of a mounted Kubernetes Secret. They are
	// re-read on SIGHUP and when they change (WatchInterval); a file that
	// does not parse keeps the previous tokens and is logged. Default none.
	ReadTokensFile  string `yaml:"read_tokens_file"`
	PIITokensFile   string `yaml:"pii_tokens_file"`
	AdminTokensFile string `yaml:"admin_tokens_file"`
	// WatchInterval is how often the token files and the TLS files are
	// checked for changes. Default 2s; negative: only on SIGHUP.
	WatchInterval time.Duration `yaml:"watch_interval"`
	// Metrics is what GET /metrics needs: "open" (default; metrics carry
	// no customer data) or "read" (a read credential).
	Metrics string `yaml:"metrics"`
}

// APITLSConfig serves the API over HTTPS. The certificate, key and client
// CA files are re-read on SIGHUP and when they change.
type APITLSConfig struct {
	// CertFile and KeyFile are the server's PEM certificate (chain) and
	// key. Both or neither. Default none (plain HTTP).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile is a PEM bundle of the CAs whose client certificates
	// authenticate callers (mutual TLS). Default none.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth is "optional" (default with a ClientCAFile: a client
	// certificate, if sent, must verify, and then authenticates; browsers
	// without one use tokens) or "require" (every connection needs one).
	ClientAuth string `yaml:"client_auth"`
	// ClientScopes are the scopes of every verified client certificate.
	// Default [read].
	ClientScopes []string `yaml:"client_scopes"`
	// PIISubjects and AdminSubjects are client certificate subject
	// common names that get the pii or admin scope beyond ClientScopes.
	// Default none.
	PIISubjects   []string `yaml:"pii_subjects"`
	AdminSubjects []string `yaml:"admin_subjects"`
}

// DefaultAllowedHosts are the Host names the API answers while it listens
// on a loopback address and api.allowed_hosts is empty.
var DefaultAllowedHosts = []string{"localhost", "127.0.0.1", "::1"}

func (a *APIConfig) ensureDefaults() {
	if a.ReadTimeout == 0 {
		a.ReadTimeout = 30 * time.Second
	}
	if a.WriteTimeout == 0 {
		a.WriteTimeout = 2 * time.Minute
	}
	if a.IdleTimeout == 0 {
		a.IdleTimeout = 2 * time.Minute
	}
	if a.AdminConcurrency == 0 {
		a.AdminConcurrency = 2
	}
	if a.AdminRate == 0 {
		a.AdminRate = 30
	}
	if a.DownloadLinkTTL == 0 {
		a.DownloadLinkTTL = time.Minute
	}
	if a.Auth.WatchInterval == 0 {
		a.Auth.WatchInterval = 2 * time.Second
	}
	if a.Auth.Metrics == "" {
		a.Auth.Metrics = "open"
	}
	if a.TLS.ClientCAFile != "" && a.TLS.ClientAuth == "" {
		a.TLS.ClientAuth = "optional"
	}
	if len(a.TLS.ClientScopes) == 0 {
		a.TLS.ClientScopes = []string{"read"}
	}
}

// HasCredentials tells whether the config names any API credential: a
// token (inline, file or the deprecated api.token) or client
// certificates. With one, requests without a credential are refused.
func (a *APIConfig) HasCredentials() bool {
	au := a.Auth
	return a.Token != "" || len(au.ReadTokens)+len(au.PIITokens)+len(au.AdminTokens) > 0 ||
		au.ReadTokensFile != "" || au.PIITokensFile != "" || au.AdminTokensFile != "" ||
		a.TLS.ClientCAFile != ""
}

// AcceptsClientCerts tells whether client certificates authenticate.
func (a *APIConfig) AcceptsClientCerts() bool { return a.TLS.ClientCAFile != "" }

// LoopbackAddr tells whether a host:port listens on loopback only: a
// loopback IP or "localhost". An empty host (all interfaces) is not.
func LoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (a *APIConfig) validate(bad func(format string, args ...any)) {
	if a.Addr == "off" {
		return
	}
	if !LoopbackAddr(a.Addr) && !a.HasCredentials() && !a.InsecureAllowUnauthenticated {
		bad("api.addr (%q) is not a loopback address and no API credentials are configured: anyone who reaches it could read profiles and erase customers; set api.auth tokens or api.tls.client_ca_file, bind 127.0.0.1, or set api.insecure_allow_unauthenticated: true", a.Addr)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"api.read_timeout", a.ReadTimeout}, {"api.write_timeout", a.WriteTimeout}, {"api.idle_timeout", a.IdleTimeout}} {
		if d.v < 100*time.Millisecond || d.v > time.Hour {
			bad("%s (%s) must be between 100ms and 1h", d.key, d.v)
		}
	}
	if a.AdminConcurrency < 1 || a.AdminConcurrency > 64 {
		bad("api.admin_concurrency (%d) must be between 1 and 64", a.AdminConcurrency)
	}
	if a.AdminRate < 1 || a.AdminRate > 100000 {
		bad("api.admin_rate (%d) must be between 1 and 100000 per minute", a.AdminRate)
	}
	if a.DownloadLinkTTL < time.Second || a.DownloadLinkTTL > time.Hour {
		bad("api.download_link_ttl (%s) must be between 1s and 1h", a.DownloadLinkTTL)
	}
	if m := a.Auth.Metrics; m != "open" && m != "read" {
		bad("api.auth.metrics (%q) must be open or read", m)
	}
	for _, s := range []struct {
		key, scope string
		entries    []string
	}{{"api.auth.read_tokens", "read", a.Auth.ReadTokens}, {"api.auth.pii_tokens", "pii", a.Auth.PIITokens}, {"api.auth.admin_tokens", "admin", a.Auth.AdminTokens}} {
		if _, err := ParseAPITokens(s.entries, s.scope, nil); err != nil {
			bad("%s: %v", s.key, err)
		}
	}
	t := a.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("api.tls.cert_file and api.tls.key_file go together: give both or neither")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		bad("api.tls.client_ca_file needs api.tls.cert_file and api.tls.key_file: client certificates need TLS")
	}
	if t.ClientAuth != "" && t.ClientAuth != "optional" && t.ClientAuth != "require" {
		bad("api.tls.client_auth (%q) must be optional or require", t.ClientAuth)
	}
	if t.ClientAuth != "" && t.ClientCAFile == "" {
		bad("api.tls.client_auth is set but api.tls.client_ca_file is empty")
	}
	for _, s := range t.ClientScopes {
		if !validAPIScope(s) {
			bad("api.tls.client_scopes: %q must be read, pii or admin", s)
		}
	}
	for _, o := range a.CORSOrigins {
		if !strings.HasPrefix(o, "https://") && !strings.HasPrefix(o, "http://") || strings.Count(o, "/") != 2 {
			bad("api.cors_origins: %q must be scheme://host[:port], without a path", o)
		}
	}
}

// APIToken is one parsed API token entry.
type APIToken struct {
	// Name is the entry's name, or SCOPE-N for a bare token. Never a
	// token.
	Name  string
	Token string
}

const minAPITokenLen = 16

// ParseAPITokens parses "NAME:TOKEN" or bare "TOKEN" entries of one scope
// (read, pii or admin). where names an entry in errors (which never
// contain a token); nil: "entry N".
func ParseAPITokens(entries []string, scope string, where func(i int) string) ([]APIToken, error) {
	if where == nil {
		where = func(i int) string { return fmt.Sprintf("entry %d", i+1) }
	}
	var out []APIToken
	for i, raw := range entries {
		s := strings.TrimSpace(raw)
		name, tok, named := strings.Cut(s, ":")
		if !named {
			name, tok = fmt.Sprintf("%s-%d", scope, i+1), s
		} else if !validTokenName(name) {
			return nil, fmt.Errorf("%s: the name before ':' must be 1-64 letters, digits, '.', '_' or '-'", where(i))
		}
		if len(tok) < minAPITokenLen {
			return nil, fmt.Errorf("%s (%s): a token must be at least %d characters", where(i), name, minAPITokenLen)
		}
		if strings.ContainsAny(tok, " \t,:") || strings.ContainsFunc(tok, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			return nil, fmt.Errorf("%s (%s): a token must be printable ASCII without spaces, commas or colons", where(i), name)
		}
		out = append(out, APIToken{Name: name, Token: tok})
	}
	return out, nil
}

func validTokenName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// validAPIScope tells whether s names an API scope (docs/api.md,
// "Security").
func validAPIScope(s string) bool { return s == "read" || s == "pii" || s == "admin" }
