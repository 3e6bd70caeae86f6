# The dm-ploop kernel target (kernel/dm-ploop): built against Debian's kernel headers, tested in
# Debian's kernel under QEMU, and kept as a patch series for the kernel tree (kernel/patches).
# Not part of `make`: `make kernel-module`, `make kernel-test`, `make kernel-patch-check`.
KVER ?= $(shell dpkg-query -W -f='$${Depends}' linux-image-amd64 2>/dev/null | sed -n 's/^linux-image-\([^ ,]*\).*/\1/p')
KDIR ?= /lib/modules/$(KVER)/build
KMOD_DIR := $(BUILD)/kernel/dm-ploop
KMOD := $(KMOD_DIR)/dm-ploop.ko
KSRC_DIR := $(BUILD)/kernel/linux-source

.PHONY: kernel-module kernel-test kernel-patch kernel-patch-check kernel-checkpatch

kernel-module: $(KMOD)

# Built from a copy next to the shared format header, so the source tree stays clean.
$(KMOD): kernel/dm-ploop/dm-ploop.c ploop/ploop_format.h
	@test -d $(KDIR) || { echo "kernel-module: no headers in $(KDIR) (make deps)"; exit 1; }
	@mkdir -p $(KMOD_DIR)
	cp kernel/dm-ploop/dm-ploop.c ploop/ploop_format.h $(KMOD_DIR)/
	printf 'ccflags-y += -Werror\nobj-m += dm-ploop.o\n' >$(KMOD_DIR)/Kbuild
	@rm -f $@
	@$(MAKE) -s -C $(KDIR) M=$(abspath $(KMOD_DIR)) modules >$(KMOD_DIR)/build.log 2>&1 || \
		{ cat $(KMOD_DIR)/build.log; exit 1; }
	@grep -v 'Skipping BTF' $(KMOD_DIR)/build.log || true

kernel-test: kernel-module $(BUILD)/bin/ploop $(BUILD)/bin/ploopd
	tests/integration/kernel_dm_ploop.sh

# Regenerates kernel/patches from the sources (the series must stay in sync: kernel-patch-check).
kernel-patch:
	kernel/patches/mkpatch.sh

# The patch applies to Debian's linux-source-6.1 tree, is checkpatch-clean, and builds there.
kernel-patch-check:
	kernel/patches/check.sh $(KSRC_DIR)
