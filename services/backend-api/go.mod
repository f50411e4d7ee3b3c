module veza/backend-api

go 1.19

require (
	github.com/golang-jwt/jwt/v4 v4.4.3
	github.com/gomodule/redigo v1.8.3
	github.com/lib/pq v1.10.7
)
