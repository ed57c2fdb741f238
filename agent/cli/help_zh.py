"""The command line's help in Simplified Chinese: every description and help text of the parser
(:mod:`agent.cli.parser`), and argparse's own words, keyed by the English text.

Imported by :class:`agent.cli.parser.ChineseHelpFormatter` only as it lays out a Chinese help or
usage, never by an English one nor by the service. ``tests/unit/test_cli_help.py`` keeps it and
the parser in step: a text without an entry here, or an entry the parser no longer uses, fails."""

from __future__ import annotations

from agent.cli.common import DEFAULT_CONFIG

# each English key and its Chinese as written, the Chinese under it when long
# fmt: off
HELP: dict[str, str] = {
    # argparse's own words
    "usage: ": "用法: ",
    "positional arguments": "位置参数",
    "options": "选项",
    "show this help message and exit": "显示本帮助信息并退出",
    "show program's version number and exit": "显示程序版本号并退出",
    # shared by several commands
    f"configuration file (default {DEFAULT_CONFIG})": f"配置文件（默认 {DEFAULT_CONFIG}）",
    "print JSON": "输出 JSON",
    "debug logging": "输出调试日志",
    "language (default: the locale's)": "语言（默认：跟随系统语言环境 locale）",
    "language (default: from the locale)": "语言（默认：跟随系统语言环境 locale）",
    # agent
    "pos-agent: keeps a POS terminal registered with its acquirer "
    "(diagnoses and repairs response 97, 终端未登记).":
        "pos-agent：保持 POS 终端在收单机构的登记状态（诊断并修复应答码 97，终端未登记）。",
    "explain a response code (field 39), a finding (e.g. registration.tusn-refused) "
    "or a header processing requirement":
        "解释应答码（39 域）、检查结果代码（如 registration.tusn-refused）或报文头处理要求",
    "decode an ISO 8583 frame given in hex (masked)":
        "解码十六进制形式的 ISO 8583 报文（敏感数据已屏蔽）",
    "run a simulator": "运行模拟器",
    "run the agent (what the systemd service starts)":
        "运行 pos-agent（即 systemd 服务启动的程序）",
    "sign in to the host now (签到) and load fresh working keys":
        "立即向主机签到，并装载新的工作密钥",
    "fetch this terminal's TID/MID/hosts from the TMS, then sign in":
        "从 TMS 下载本终端的 TID/MID 和主机地址，然后签到",
    "echo test (0820/301) to the host": "向主机发送回响测试（0820/301）",
    "what the running agent is doing": "查看运行中的 pos-agent 服务的状态",
    "the journal's timeline: transactions, recoveries, events":
        "交易日志的时间线：交易、恢复过程、事件",
    "parameters, CA keys and IC parameters the host sent":
        "主机下发的终端参数、CA 公钥和 IC 卡参数",
    "configuration tools": "配置工具",
    "card module tools": "加密模块工具",
    "check the terminal: provisioning, clock, network, keys, module, storage":
        "自检：终端参数、时钟、网络、密钥、加密模块、存储",
    "the fleet's terminals from the MQTT broker: open incidents, counts by state and cause, "
    "who needs a person; 'fleet watch' the incident watcher, 'fleet send' a command":
        "从 MQTT 服务器查看车队中的终端：未关闭的故障事件、按状态和原因的统计、需要人工处理的"
        "终端；'fleet watch' 为故障事件监视服务，'fleet send' 向终端发送命令",
    "the agent at work on simulators: a 97 recovered, then one escalated":
        "在模拟器上演示 pos-agent 的工作：一次 97 自动恢复，另一次转人工处理",
    # agent explain
    "two-character response code, e.g. 97, or a finding code":
        "两位应答码（如 97）或检查结果代码",
    "explain the header's processing requirement N (0-15) instead, or 'all' for the table":
        "改为解释报文头处理要求 N（0-15），或用 'all' 显示整张表",
    # agent decode
    "the frame in hex, or - to read hex from stdin": "十六进制的报文，或用 - 从标准输入读取",
    "framing: host = length+TPDU+header, app = length only, tpdu = TPDU+header, "
    "bare = message only; auto-detected by default":
        "报文封装：host = 长度+TPDU+报文头，app = 仅长度，tpdu = TPDU+报文头，"
        "bare = 仅报文；默认自动识别",
    "wire profile (TOML) of the acquirer": "收单机构的报文格式配置（wire profile，TOML）",
    # agent sim
    "card module simulator on a pty or a TCP port":
        "加密模块模拟器，运行在伪终端（pty）或 TCP 端口上",
    "acquirer host simulator (ISO 8583 over TCP)": "收单主机模拟器（基于 TCP 的 ISO 8583）",
    "terminal management system simulator (HTTP JSON)": "终端管理系统（TMS）模拟器（HTTP JSON）",
    # agent sim module
    "Card module simulator speaking the serial protocol of DESIGN.md section 5. Prints the "
    "path to open as its first line, then reads commands on stdin: noise RATE, drop RATE, "
    "delay SECONDS, busy COUNT, tamper on|off, unplug, replug, garbage COUNT, status, quit.":
        "加密模块模拟器，使用 DESIGN.md 第 5 节的串口协议。第一行输出应打开的设备路径，之后从标准"
        "输入读取命令：noise RATE、drop RATE、delay SECONDS、busy COUNT、tamper on|off、"
        "unplug、replug、garbage COUNT、status、quit。",
    "serve on a new pty (the default)": "在新建的伪终端上提供服务（默认）",
    "listen on socket://HOST:PORT instead of a pty": "改为在 socket://HOST:PORT 上监听，不用伪终端",
    "keep a symlink to the pty here (stable across replug)":
        "在此路径保留指向伪终端的符号链接（重新插入后不变）",
    "state file with the keys (created on first start)": "保存密钥的状态文件（首次启动时创建）",
    "rate of corrupted bytes, 0-1": "出错字节的比例，0-1",
    "rate of lost bytes, 0-1": "丢失字节的比例，0-1",
    "seconds before each reply": "每次应答前等待的秒数",
    "answer the next N commands with busy": "对接下来的 N 条命令应答忙",
    "start with the tamper flag set": "启动时即置防拆触发标志",
    "RTC offset in seconds": "实时时钟（RTC）的偏差，单位秒",
    "seed of the fault generator (repeatable runs)": "故障生成器的随机种子（可重复运行）",
    # agent sim host
    "terminal registry (JSON; created with one test terminal if absent)":
        "终端登记表（JSON；不存在时创建，内含一台测试终端）",
    "admin HTTP port on 127.0.0.1": "127.0.0.1 上的管理 HTTP 端口",
    "serve TLS with this certificate chain (PEM)": "使用此证书链提供 TLS 服务（PEM）",
    "private key of --tls-cert (PEM)": "--tls-cert 证书的私钥（PEM）",
    "field 62 layout of sign-ins (DESIGN.md section 4); 0: the scheme's full-length one":
        "签到应答 62 域的格式（DESIGN.md 第 4 节）；0：该方案的完整长度格式",
    "the host's batch number (60.2 of 0810)": "主机的批次号（0810 的 60.2 域）",
    "answer 77 to a purchase of another batch": "对其他批次的消费应答 77",
    "refuse (97) a purchase or pre-authorisation without a right field 59 A2 of a "
    "reported TUSN (DESIGN.md section 17)":
        "消费或预授权未带已报备 TUSN 的正确 59 域 A2 时，以 97 拒绝（DESIGN.md 第 17 节）",
    "sign-in schemes (60.3) the host accepts, e.g. 004,006 as a posp_server-style host; "
    "others are answered 40 (default: every scheme it can issue keys for)":
        "主机接受的签到方案（60.3 域），如 004,006（同 posp_server 类主机）；其他方案应答 40"
        "（默认：凡能下发密钥的方案都接受）",
    "wire profile (TOML) to decode and encode with":
        "解码和编码所用的报文格式配置（wire profile，TOML）",
    # agent sim tms
    "HOST:PORT (default: any free port)": "HOST:PORT（默认：任一空闲端口）",
    "provisioning by module serial (JSON)": "按加密模块序列号下发的终端参数（JSON）",
    # agent journal
    "only since: 30m, 2h, 1d, an ISO time, or epoch seconds":
        "只显示此后的记录：30m、2h、1d、ISO 格式时间或 Unix 时间戳（秒）",
    # agent config check
    "validate the configuration and show what is in effect": "检查配置文件并显示生效的配置",
    # agent module check
    "conformance run against the card module, through its driver": "通过驱动对加密模块做一致性测试",
    "Runs the cases of the module protocol (DESIGN.md section 5) against the module through "
    "its driver (module.driver, a pos_agent.modules entry point): commands, statuses, KCVs, "
    "MACs, TUSN, PIN entry, repeated SEQ, noise, unplug. Cases that load keys run only on a "
    "slot holding the documented test TMK, and replace its working keys; a production "
    "module's keys are left alone and those cases skipped. Stop the service first: it is "
    "the only user of the line. Exit 0 no case failed, 1 a case failed, 2 usage (no such "
    "driver, one that cannot load).":
        "通过驱动（module.driver，pos_agent.modules 入口点）对加密模块运行模块协议"
        "（DESIGN.md 第 5 节）的测试用例：命令、状态、校验值（KCV）、MAC、TUSN、密码输入、"
        "重复的 SEQ、线路噪声、拔出。装载密钥的用例只在装有文档所列测试主密钥（TMK）的密钥槽"
        "上运行，并会替换该槽的工作密钥；生产模块的密钥不受影响，这些用例跳过。请先停止服务："
        "串口线路只能由它一个程序使用。退出码 0：无用例失败；1：有用例失败；2：用法错误"
        "（无此驱动，或驱动无法加载）。",
    "the module at URL instead of module.url": "测试 URL 处的模块，而非 module.url",
    "start the module simulator and run against it, with its fault injection "
    "(noise, unplug) and test keypad":
        "启动加密模块模拟器并对其测试，包括故障注入（噪声、拔出）和测试用密码键盘",
    "this driver instead of module.driver": "使用此驱动，而非 module.driver",
    "check slot N (repeatable; default 0 and 1, the documented test slots)":
        "检查密钥槽 N（可重复指定；默认 0 和 1，即文档所列的测试密钥槽）",
    "the module must hold the documented test keys: a slot without them fails":
        "要求模块装有文档所列的测试密钥：没有测试密钥的密钥槽判为失败",
    "a person is at the module's keypad and types 123456 when asked":
        "有人在模块的密码键盘前，提示时输入 123456",
    # agent selftest
    "Runs the self-check (asks the running agent, or checks directly). "
    "Exit 0 healthy (warnings allowed), 1 a check failed, 2 could not run.":
        "运行自检（询问运行中的服务，或直接检查）。"
        "退出码 0：正常（允许有警告）；1：有检查项失败；2：无法运行。",
    "print the pinned JSON report": "输出格式固定的 JSON 报告",
    "run only these checks": "只运行这些检查项",
    # agent fleet
    "Reads the retained states and incidents on the broker (DESIGN.md section 14). Text from "
    "the broker is shown escaped and clipped; messages that cannot be read are counted. "
    "Exit 0, 1 the broker cannot be reached, 2 usage or configuration.":
        "读取 MQTT 服务器上保留的终端状态和故障事件（DESIGN.md 第 14 节）。来自服务器的文本经"
        "转义和截短后显示；无法读取的消息只计数。退出码 0：正常；1：无法连接 MQTT 服务器；"
        "2：用法或配置错误。",
    "mqtt[s]://HOST[:PORT] (default: telemetry.broker); alone, no configuration file is read":
        "mqtt[s]://HOST[:PORT]（默认：telemetry.broker）；单独使用时不读取配置文件",
    "keep the summary up to date; Ctrl-C stops": "持续刷新汇总；按 Ctrl-C 停止",
    "the incident watcher: opens and closes host-side incidents (a long-running service)":
        "故障事件监视：开启和关闭主机侧故障事件（长期运行的服务）",
    "send an operator command to one terminal and print its answer":
        "向一台终端发送运维命令并输出其应答",
    # agent fleet watch
    "Opens a retained host-side incident on <prefix>/incidents/<acquirer host> when "
    "fleet.incident_min_terminals terminals of one acquirer host report 97 or become "
    "unregistered within fleet.incident_window seconds with a healthy self-check, and closes "
    "it when they are registered again or after the window without a 97. Events come through "
    "the MQTT 5 shared subscription $share/pos-fleet/<prefix>/+/event, so several watchers "
    "split them (under MQTT 3.1.1 each hears all). SIGTERM stops it. Exit 0 stopped, 1 the "
    "broker cannot be reached, 2 usage or configuration.":
        "同一收单主机的 fleet.incident_min_terminals 台终端在 fleet.incident_window 秒内报告 97 "
        "或变为未登记、而自检正常时，在 <prefix>/incidents/<acquirer host> 上开启一个保留的"
        "主机侧故障事件；这些终端重新登记后，或一个时间窗内不再出现 97 时，关闭该事件。事件经"
        " MQTT 5 共享订阅 $share/pos-fleet/<prefix>/+/event 接收，多个监视服务分担处理"
        "（MQTT 3.1.1 下每个都收到全部事件）。收到 SIGTERM 时停止。退出码 0：已停止；"
        "1：无法连接 MQTT 服务器；2：用法或配置错误。",
    # agent fleet send
    "Publishes {cmd, args, expires} on <prefix>/SERIAL/cmd/<id> (QoS 1, not retained) and "
    "waits for the agent's answer on .../result. The agent runs commands only with "
    "telemetry.commands = true over TLS with a pinned CA. Exit 0 done, 1 the agent refused "
    "or failed (or the broker cannot be reached), 2 usage, 3 no answer within --timeout.":
        "在 <prefix>/SERIAL/cmd/<id> 上发布 {cmd, args, expires}（QoS 1，不保留），并在 "
        ".../result 上等待终端 pos-agent 的应答。终端只在 telemetry.commands = true、经 TLS "
        "连接且 CA 证书固定时才执行命令。退出码 0：已完成；1：终端拒绝或执行失败（或无法连接 "
        "MQTT 服务器）；2：用法错误；3：--timeout 时间内无应答。",
    "the terminal's card module serial": "终端加密模块的序列号",
    "selftest, signin, provision, journal (the last N masked events) or incident "
    "(open or close a host-side incident for this terminal)":
        "selftest、signin、provision、journal（最近 N 条事件，敏感数据已屏蔽）或 incident"
        "（为该终端开启或关闭主机侧故障事件）",
    "the command's arguments, a JSON object": "命令的参数，一个 JSON 对象",
    "the agent refuses the command after this many seconds (default 60)":
        "超过此秒数后终端拒绝执行该命令（默认 60）",
    "how long to wait for the answer (default 30)": "等待应答的秒数（默认 30）",
    # agent demo
    "show the agent's log too": "同时显示 pos-agent 的日志",
}
# fmt: on
