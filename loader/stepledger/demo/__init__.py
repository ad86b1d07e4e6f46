"""Demo data: simulated BotImage jobs and a mock pipeline that reports through the SDK."""
