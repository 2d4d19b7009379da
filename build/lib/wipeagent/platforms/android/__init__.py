"""Android: what to ask a phone over ADB and what the answers mean.

`driver.AndroidDriver` is the PlatformDriver; `parse` holds the output parsers, `checks`
the diagnostics, `erase` the method choice, `verify` the post-erase checks and
`commands` every command string the driver may send.
"""
