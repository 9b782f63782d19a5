# The two set-up commands a newcomer needs:  make demo  and  make test.
# Both create .venv on first use and install the Debian packages they need when missing;
# they are quick when everything is already there.

PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
APT     := apt-get -o DPkg::Lock::Timeout=600
DEB_PKGS := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k sox libsox-fmt-all libsndfile1 ffmpeg \
            fortune-mod fortunes fortunes-min wamerican wordnet-base slurm-wlm munge \
            mariadb-server slurmdbd

.PHONY: demo test test-fast deb venv bench clean-runs

demo: venv
	$(PY) -m asr_dist.demo

test: venv
	bash tests/run.sh

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not slurm"

bench: venv
	$(PY) benchmarks/run_all.py

venv: deb $(STAMP)

# Debian packages: installed only when one is missing.
deb:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(APT) update -q && DEBIAN_FRONTEND=noninteractive $(APT) install -y -q --no-install-recommends $$missing; \
	fi

# Python environment. DeepSpeed builds from source: wheel + setuptools + torch first, then no build isolation.
$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PIP) install -q -U pip wheel setuptools ninja
	$(PIP) install -q torch==2.11.0 torchaudio==2.11.0
	$(PIP) install -q --no-build-isolation -e '.[test]'
	$(PY) -m asr_dist._warm_ops  # DeepSpeed's CPU op, built once into .venv/torch_extensions
	touch $(STAMP)

clean-runs:
	rm -rf runs/
