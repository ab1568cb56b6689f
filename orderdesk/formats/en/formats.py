# Traders read times to the second, dates as the exchange writes them (the admin and every
# template; Django's en locale shows "Dec. 1, 2026, 9:48 a.m.").
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
