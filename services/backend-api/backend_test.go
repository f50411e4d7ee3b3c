package main

import (
	"errors"
	"net/http"
	"strings"
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
