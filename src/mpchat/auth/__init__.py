"""Identity: session tokens and the login modes (dev, wechat, cloudrun)."""
