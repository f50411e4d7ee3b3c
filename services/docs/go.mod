module veza/docs

go 1.19
