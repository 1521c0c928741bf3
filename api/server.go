package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/engine"
)

// Listen listens on api.addr and serves the API (over TLS with api.tls),
// with the server's timeouts, until stop is called; it also watches the
// token and TLS files. addr is the address it listens on.
func (s *Server) Listen() (addr string, stop func(), err error) {
	c := s.cfg
	if !engine.LoopbackAddr(c.Addr) && !c.HasCredentials() && !c.InsecureAllowUnauthenticated {
		return "", nil, fmt.Errorf("api.addr %s is not a loopback address and no API credentials are configured (api.auth, api.tls.client_ca_file) nor api.insecure_allow_unauthenticated", c.Addr)
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return "", nil, fmt.Errorf("api.addr %s: %w", c.Addr, err)
	}
	g := s.g
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: min(10*time.Second, c.ReadTimeout),
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		// TLS handshake failures and the like, at debug: they carry
		// addresses, never headers.
		ErrorLog: log.New(zerologWriter{s.log}, "", 0),
	}
	if g.tls != nil {
		srv.TLSConfig = g.tls.config(c.TLS.ClientAuth)
	}
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		var err error
		if g.tls != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("api server stopped")
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		if c.Auth.WatchInterval < 0 {
			return
		}
		t := time.NewTicker(c.Auth.WatchInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := g.reloadFiles(false); err != nil {
				s.log.Error().Err(err).Msg("api credentials changed but do not load; the previous ones stay")
			}
		}
	}()
	scheme := "http"
	if g.tls != nil {
		scheme = "https"
	}
	ev := s.log.Info()
	if g.open && !engine.LoopbackAddr(c.Addr) {
		ev = s.log.Warn().Bool("insecure_allow_unauthenticated", true)
	}
	ev.Str("addr", ln.Addr().String()).Str("scheme", scheme).Bool("credentials", c.HasCredentials()).Msg("api listening")
	if c.HasCredentials() && len(*g.tokens.Load()) == 0 && !c.AcceptsClientCerts() {
		s.log.Warn().Msg("api credentials are configured but no token is loaded: every request that needs one gets 401 until a token file holds one")
	}
	if g.open && !engine.LoopbackAddr(c.Addr) {
		s.log.Warn().Str("addr", c.Addr).Msg("INSECURE: the API answers anyone who can reach it, without credentials (api.insecure_allow_unauthenticated): profiles, member lists, erasure and rules")
	} else if g.tls == nil && !engine.LoopbackAddr(c.Addr) {
		s.log.Warn().Str("addr", c.Addr).Msg("the API is served over plain HTTP beyond loopback: tokens cross the network in the clear; set api.tls or terminate TLS in front")
	}
	return ln.Addr().String(), func() {
		cancel()
		<-watchDone
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
		<-serveDone
	}, nil
}

type zerologWriter struct{ log zerolog.Logger }

func (w zerologWriter) Write(p []byte) (int, error) {
	w.log.Debug().Str("error", string(bytes.TrimSpace(p))).Msg("http server")
	return len(p), nil
}

// certReloader holds the API's certificate and client CAs, re-read when
// their files change. Safe for concurrent use; reload is serialized by
// apiGuard.filesMu.
type certReloader struct {
	certFile, keyFile, caFile string
	cert                      atomic.Pointer[tls.Certificate]
	pool                      atomic.Pointer[x509.CertPool]
	stamp                     [sha256.Size]byte
}

// reload loads the files if their contents changed. On error what was
// loaded before stays.
func (c *certReloader) reload() (changed bool, err error) {
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return false, fmt.Errorf("api.tls.cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return false, fmt.Errorf("api.tls.key_file: %w", err)
	}
	var caPEM []byte
	if c.caFile != "" {
		if caPEM, err = os.ReadFile(c.caFile); err != nil {
			return false, fmt.Errorf("api.tls.client_ca_file: %w", err)
		}
	}
	h := sha256.New()
	for _, b := range [][]byte{certPEM, keyPEM, caPEM} {
		h.Write(b)
		h.Write([]byte{0})
	}
	var stamp [sha256.Size]byte
	copy(stamp[:], h.Sum(nil))
	if stamp == c.stamp && c.cert.Load() != nil {
		return false, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error of X509KeyPair names what is wrong, not the key.
		return false, fmt.Errorf("api.tls.cert_file/key_file: %w", err)
	}
	if c.caFile != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return false, fmt.Errorf("api.tls.client_ca_file %s: no PEM certificate in it", c.caFile)
		}
		c.pool.Store(pool)
	}
	c.cert.Store(&cert)
	c.stamp = stamp
	return true, nil
}

// config is the server TLS config: the current certificate, and the
// current client CAs for each new connection.
func (c *certReloader) config(clientAuth string) *tls.Config {
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cert.Load(), nil }
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert}
	if c.caFile != "" {
		mode := tls.VerifyClientCertIfGiven
		if clientAuth == "require" {
			mode = tls.RequireAndVerifyClientCert
		}
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert, ClientAuth: mode, ClientCAs: c.pool.Load(),
				NextProtos: []string{"h2", "http/1.1"}}, nil
		}
	}
	return cfg
}

// postExport issues a short-lived signed link to the segment's members as
// CSV, so that a browser can download them without a token in the URL.
// The link works on this process only, until api.download_link_ttl.
func (s *Server) postExport(w http.ResponseWriter, r *http.Request) {
	seg := r.PathValue("id")
	if !s.knownSegment(seg) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown segment %q", seg))
		return
	}
	exp := time.Now().Add(s.cfg.DownloadLinkTTL).Unix()
	q := url.Values{"expires": {strconv.FormatInt(exp, 10)}, "sig": {s.g.linkSig(seg, exp)}}
	writeJSON(w, http.StatusOK, map[string]any{
		"url":        "/v1/segments/" + url.PathEscape(seg) + "/members.csv?" + q.Encode(),
		"expires_at": time.Unix(exp, 0).UTC().Format(time.RFC3339),
	})
}

func (g *apiGuard) linkSig(seg string, exp int64) string {
	m := hmac.New(sha256.New, g.linkKey[:])
	fmt.Fprintf(m, "members.csv\x00%s\x00%d", seg, exp)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// signedLink lets through requests whose link postExport signed and that
// has not expired: the signature is the credential, for one segment.
func (s *Server) signedLink(h http.Handler) http.Handler {
	g := s.g
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		exp, err := strconv.ParseInt(r.URL.Query().Get("expires"), 10, 64)
		sig := r.URL.Query().Get("sig")
		if err != nil || time.Now().Unix() > exp || !hmac.Equal([]byte(sig), []byte(g.linkSig(r.PathValue("id"), exp))) {
			g.refused.WithLabelValues("bad_link").Inc()
			writeError(w, http.StatusForbidden, "the download link is invalid or expired: ask for a new one (POST /v1/segments/{id}/export)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// getMembersCSV streams every member of the segment this process holds,
// one customer id per line under a customer_id header.
func (s *Server) getMembersCSV(w http.ResponseWriter, r *http.Request) {
	seg := r.PathValue("id")
	if !s.knownSegment(seg) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown segment %q", seg))
		return
	}
	ids, next, err := s.eng.Members(seg, "", maxMembersLimit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "state unavailable: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+url.PathEscape(seg)+`-members.csv"`)
	cw := csv.NewWriter(w)
	cw.Write([]string{"customer_id"})
	for {
		for _, id := range ids {
			cw.Write([]string{id})
		}
		if next == "" {
			break
		}
		if ids, next, err = s.eng.Members(seg, next, maxMembersLimit); err != nil {
			// The status is sent: cut the file short, visibly.
			cw.Write([]string{"# incomplete: " + err.Error()})
			break
		}
	}
	cw.Flush()
}
