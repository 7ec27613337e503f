"""agilenn.device_agent: the device half of AgileNN (docs/agent.md) and its serial protocol (docs/serial-protocol.md).

Library entry point: agilenn.device_agent.agent.Agent. Commands: agilenn-agent (cli), agilenn-mcu-sim
(mcu_sim), agilenn-demo (demo). MCU cost model: agilenn.device_agent.mcu.
"""
