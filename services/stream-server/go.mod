module veza/stream-server

go 1.19
