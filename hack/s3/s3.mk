# Makefile fragment for the S3 tier: a real S3-compatible object store (SeaweedFS `weed server -s3`,
# built from its Go module) on 127.0.0.1. Include it from the top Makefile:
#     include hack/s3/s3.mk
#
#   make s3-binary    build/cache weed (cold: ~8 min measured on 2 cores; warm: <1 s)
#   make s3           start detached, print the export lines (endpoint, keys, bucket "sabot")
#   make s3-env       print the export lines again (eval "$$(make -s s3-env)")
#   make s3-status    show the process and ListBuckets
#   make s3-down      stop it, remove its state dir (and the data in it)
#
# The binary is cached in $(SABOT_CACHE) (outside the repo); state and data live in $(S3_DIR)
# (gitignored). S3_HOST / S3_PORT choose the bind address and port (default 127.0.0.1, a free port).

# s3server.py is stdlib-only (Python >= 3.9): any python3 will do.
PYTHON      ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
SABOT_CACHE ?= $(HOME)/.cache/sabot
S3_DIR      ?= .s3
S3_HOST     ?= 127.0.0.1
S3_PORT     ?= 0
export SABOT_CACHE

S3_SERVER := hack/s3/s3server.py

.PHONY: s3-binary s3 s3-env s3-status s3-down

s3-binary:
	@hack/s3/ensure-seaweedfs.sh >/dev/null

s3: s3-binary
	@$(PYTHON) $(S3_SERVER) up --state-dir $(S3_DIR) --host $(S3_HOST) --port $(S3_PORT)
	@echo "# run the lines above (or: eval \"\$$(make -s s3-env)\")" >&2

s3-env:
	@$(PYTHON) $(S3_SERVER) status --state-dir $(S3_DIR) | grep '^export '

s3-status:
	@$(PYTHON) $(S3_SERVER) status --state-dir $(S3_DIR)

s3-down:
	@$(PYTHON) $(S3_SERVER) down --state-dir $(S3_DIR)
