package main

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/gomodule/redigo/redis"
	"github.com/lib/pq"

	"veza/backend-api/kit"
)

const secret = "0123456789abcdef0123456789abcdef"

func bearer(tok string) *http.Request {
	r, _ := http.NewRequest(http.MethodPut, "/api/v1/tracks/x", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

func TestVerifierAcceptsItsOwnHS256Token(t *testing.T) {
	v, err := NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := v.Sign("smoke", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if sub, err := v.Subject(bearer(tok)); err != nil || sub != "smoke" {
		t.Fatalf("subject %q, err %v", sub, err)
	}
}

func TestVerifierRefusesForgedExpiredUnsignedAndOtherAlgorithms(t *testing.T) {
	v, _ := NewVerifier(secret)
	other, _ := NewVerifier(strings.Repeat("z", 32))
	forged, _ := other.Sign("mallory", time.Minute)
	expired, _ := v.Sign("late", -time.Minute)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "x",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Minute))}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.RegisteredClaims{Subject: "x",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Minute))}).SignedString([]byte(secret))
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "x"}).SignedString([]byte(secret))
	noSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Minute))}).SignedString([]byte(secret))
	for name, tok := range map[string]string{"forged": forged, "expired": expired, "alg none": none,
		"HS512": hs512, "no exp": noExp, "no sub": noSub, "garbage": "a.b.c", "empty": ""} {
		if sub, err := v.Subject(bearer(tok)); err == nil {
			t.Errorf("%s: accepted (subject %q)", name, sub)
		}
	}
	r, _ := http.NewRequest(http.MethodPut, "/", nil)
	if _, err := v.Subject(r); err == nil {
		t.Error("no Authorization header: accepted")
	}
}

func TestVerifierRefusesAShortSecretWithoutPrintingIt(t *testing.T) {
	_, err := NewVerifier("short-secret")
	if err == nil || strings.Contains(err.Error(), "short-secret") {
		t.Fatalf("err = %v", err)
	}
}

func TestDSNQuotesEveryValue(t *testing.T) {
	dsn := DBConfig{Host: "db", Port: "5432", Name: "veza", User: "veza", Password: `p'w\ x=y`, SSLMode: "disable"}.DSN()
	if !strings.Contains(dsn, `password='p\'w\\ x=y'`) {
		t.Fatalf("dsn %s", dsn)
	}
	if _, err := pq.NewConnector(dsn); err != nil {
		t.Fatalf("lib/pq cannot parse it: %v", err)
	}
	if strings.Contains(DBConfig{Host: "db"}.DSN(), "password") {
		t.Fatal("an empty password must not be sent")
	}
}

func TestPostgresAuthorizationErrorsAreRejectedAndCarryNoPassword(t *testing.T) {
	s := &Store{password: "hunter2-secret"}
	var rej *kit.RejectedError
	err := s.classify(&pq.Error{Code: "28P01", Message: `password authentication failed for user "veza"`})
	if !errors.As(err, &rej) || !strings.Contains(err.Error(), "28P01") {
		t.Fatalf("28P01: %v", err)
	}
	if err := s.classify(&pq.Error{Code: "28000", Message: "no pg_hba.conf entry"}); !errors.As(err, &rej) {
		t.Fatalf("28000: %v", err)
	}
	if err := s.classify(&pq.Error{Code: "57P03", Message: "the database system is starting up"}); errors.As(err, &rej) {
		t.Fatalf("57P03 must not count as rejected: %v", err)
	}
	if err := s.classify(errors.New("dial tcp: password=hunter2-secret")); strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("password leaked: %v", err)
	}
}

func TestRedisAuthErrorsAreRejected(t *testing.T) {
	var rej *kit.RejectedError
	for _, msg := range []string{"WRONGPASS invalid username-password pair or user is disabled.",
		"NOAUTH Authentication required.", "ERR AUTH <password> called without any password configured for the default user."} {
		if err := classifyRedis(redis.Error(msg)); !errors.As(err, &rej) {
			t.Errorf("%q: %v", msg, err)
		}
	}
	if err := classifyRedis(redis.Error("LOADING Redis is loading the dataset in memory")); errors.As(err, &rej) {
		t.Errorf("LOADING counted as rejected")
	}
}

func TestMigrationsAreOrderedAndStartAtOne(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m.Version != i+1 || strings.TrimSpace(m.SQL) == "" {
			t.Fatalf("migration %d: version %d (%s)", i, m.Version, m.Name)
		}
	}
}

// SIGTERM starts the drain: /ready says 503 draining at once, /health and the rest keep answering for the
// delay, and only then does the listener close.
func TestTerminationDrainsForTheDelayThenShutsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := kit.New("drain-test", ln.Addr().String())
	stop := make(chan os.Signal, 1)
	done := make(chan error, 1)
	delay := 600 * time.Millisecond
	go func() { done <- s.Serve(ln, stop, delay) }()
	base := "http://" + ln.Addr().String()
	get := func(path string) (int, string, error) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if code, body, err := get("/ready"); err != nil || code != http.StatusOK {
		t.Fatalf("before SIGTERM /ready: %d %s %v", code, body, err)
	}
	signalled := time.Now()
	stop <- syscall.SIGTERM
	time.Sleep(50 * time.Millisecond)
	code, body, err := get("/ready")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, `"draining":true`) {
		t.Fatalf("draining /ready: %d %s %v", code, body, err)
	}
	for _, p := range []string{"/health", "/version", "/metrics"} {
		if code, body, err := get(p); err != nil || code != http.StatusOK {
			t.Fatalf("draining %s: %d %s %v", p, code, body, err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("returned %v after %v, before the %v delay", err, time.Since(signalled), delay)
	case <-time.After(delay - time.Since(signalled) - 100*time.Millisecond):
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still serving 5 s after the delay")
	}
	if _, _, err := get("/health"); err == nil {
		t.Fatal("/health still answered after the shutdown")
	}
}

func TestShutdownDelayIsNonNegativeSecondsDefaultZero(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 0, "0": 0, "5": 5 * time.Second, "1.5": 1500 * time.Millisecond} {
		t.Setenv("SHUTDOWN_DELAY_S", v)
		if got, err := kit.ShutdownDelay(); err != nil || got != want {
			t.Errorf("SHUTDOWN_DELAY_S=%q: %v %v, want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"-1", "five", "5s", "NaN", "1e9"} {
		t.Setenv("SHUTDOWN_DELAY_S", v)
		if _, err := kit.ShutdownDelay(); err == nil || !strings.Contains(err.Error(), "SHUTDOWN_DELAY_S") {
			t.Errorf("SHUTDOWN_DELAY_S=%q accepted (%v)", v, err)
		}
	}
}
