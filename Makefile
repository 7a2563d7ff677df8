# The two commands of the README. Both install what they need on a fresh Debian machine.
.PHONY: run test

run:  ## Run Sextant on its embedded SQLite database at http://127.0.0.1:8080
	bash scripts/run.sh

test:  ## Install the real test components, run the linters and the whole test suite
	bash scripts/test.sh
