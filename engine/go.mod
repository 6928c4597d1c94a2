module github.com/wakestorm/wakestorm/engine

go 1.26.0

require github.com/gorilla/websocket v1.5.3

require (
	github.com/lesismal/llib v1.2.5
	github.com/lesismal/nbio v1.6.8
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/sys v0.50.0
)

replace github.com/lesismal/nbio => ./third_party/nbio
