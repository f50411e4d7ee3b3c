module veza/backend-api

go 1.19
