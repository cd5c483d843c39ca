# Two commands a newcomer needs; both work on a fresh Debian 12 machine.
#   make demo   set up, start the bundled simulated cluster (or use $KUBECONFIG), run the mode-switch demo
#   make test   set up, then lint, sanity, unit, integration and Molecule tests
.PHONY: setup demo test lint clean
setup:
	scripts/setup
demo: setup
	scripts/demo
test: setup
	scripts/test
lint: setup
	. scripts/env.sh && ansible-lint --profile production
clean:
	rm -rf .venv .collections .cache tests/output
