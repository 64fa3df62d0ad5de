module github.com/tunnelhq/tunnel/docs/experiments/muxbench

go 1.26

require github.com/hashicorp/yamux v0.1.2
