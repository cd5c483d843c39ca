# Two commands a newcomer needs; both work on a fresh Debian 12 machine.
#   make demo     set up what the demo needs, start the bundled simulated cluster (or use $KUBECONFIG), run the mode-switch demo
#   make test     set up, then lint, sanity, unit, simulator, integration and Molecule tests
# Pieces:
#   make setup    idempotent environment setup (scripts/setup)
#   make lint     ansible-lint, production profile
#   make test-fast  the developer loop: everything but Molecule and ansible-test sanity (scripts/test --fast)
#   make sanity   ansible-test sanity for the venv's Python (scripts/sanity)
#   make clean    remove the local environment and tool output
.PHONY: setup demo test test-fast lint sanity clean
setup:
	scripts/setup
demo:
	scripts/setup --demo
	scripts/demo
test: setup
	scripts/test
test-fast: setup
	scripts/test --fast
lint: setup
	. scripts/env.sh && ansible-lint --profile production
sanity: setup
	scripts/sanity
clean:
	rm -rf .venv .collections .cache tests/output
