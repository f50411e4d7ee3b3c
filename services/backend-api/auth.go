package main

// Write endpoints take `Authorization: Bearer <JWT>`: HS256 (HMAC-SHA256) signed with JWT_SECRET, checked
// with Debian's golang-jwt (vendor/, VENDORED.md). Only HS256 is accepted (RFC 8725 §3.1: the verifier,
// not the token, decides the algorithm), `exp` and `sub` are required.

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v4"
)

// MinSecretBytes: an HS256 key is at least as long as the hash output (RFC 7518 §3.2: 256 bits).
const MinSecretBytes = 32

// Verifier checks tokens signed with one secret.
type Verifier struct {
	secret []byte
	parser *jwt.Parser
}

// NewVerifier refuses a secret shorter than MinSecretBytes (the error names the variable, never the value).
func NewVerifier(secret string) (*Verifier, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("JWT_SECRET must hold at least %d bytes (it has %d)", MinSecretBytes, len(secret))
	}
	return &Verifier{secret: []byte(secret), parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}))}, nil
}

// Sign makes an HS256 token for subject, valid for ttl (used by tests and the smoke tooling's equivalent).
func (v *Verifier) Sign(subject string, ttl time.Duration) (string, error) {
	now := time.Now()
	claims := jwt.RegisteredClaims{Subject: subject, IssuedAt: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl))}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(v.secret)
}

// Subject returns the token's subject from the request's bearer token, or why it is refused.
func (v *Verifier) Subject(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	raw := strings.TrimPrefix(h, "Bearer ")
	if !strings.HasPrefix(h, "Bearer ") || raw == "" {
		return "", errors.New("send Authorization: Bearer <token> (HS256)")
	}
	var claims jwt.RegisteredClaims
	if _, err := v.parser.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return v.secret, nil }); err != nil {
		return "", fmt.Errorf("token refused: %w", err)
	}
	if claims.ExpiresAt == nil {
		return "", errors.New("token refused: it has no exp")
	}
	if claims.Subject == "" {
		return "", errors.New("token refused: it has no sub")
	}
	return claims.Subject, nil
}
