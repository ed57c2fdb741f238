# The oldest Buildroot this tree is for: 2025.02, the previous LTS (2026.02 is the current one).
BR2_EXTERNAL_POS_AGENT_MIN_VERSION = 2025.02
ifneq ($(firstword $(shell printf '%s\n' $(BR2_EXTERNAL_POS_AGENT_MIN_VERSION) $(BR2_VERSION) | sort -V)),$(BR2_EXTERNAL_POS_AGENT_MIN_VERSION))
$(error pos-agent needs Buildroot $(BR2_EXTERNAL_POS_AGENT_MIN_VERSION) or later, this is $(BR2_VERSION))
endif

# Every package of this tree but those Buildroot has itself (python-platformdirs from 2026.02
# on): Buildroot refuses a package defined twice.
include $(sort $(foreach mk,$(wildcard $(BR2_EXTERNAL_POS_AGENT_PATH)/*/*.mk),\
	$(if $(wildcard $(patsubst $(BR2_EXTERNAL_POS_AGENT_PATH)/%,$(TOPDIR)/package/%,$(mk))),,$(mk))))
