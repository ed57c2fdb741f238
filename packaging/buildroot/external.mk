include $(sort $(wildcard $(BR2_EXTERNAL_POS_AGENT_PATH)/*/*.mk))
