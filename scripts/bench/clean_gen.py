#!/usr/bin/env python3
"""Synthetic data for `dsft clean`: the labelled PII set and the benchmark corpus.

  clean_gen.py pii-set -o tests/data/fixtures/clean/pii_labelled.jsonl   (seeded, reproducible)
  clean_gen.py corpus --mb 60 -o /tmp/clean-bench/records.jsonl

Every PII value is generated valid (ID checksums, Luhn, real dates, octets <= 255) and every
look-alike is generated to fail exactly one rule, so the labels follow from the rules, not from
whatever a detector happens to do.
"""
import argparse
import datetime
import json
import random
import string
import sys

R = random.Random(20240607)

PROVINCES = [11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
             53, 54, 61, 62, 63, 64, 65]
ID_W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def id_check(body17):
    return "10X98765432"[sum(int(c) * w for c, w in zip(body17, ID_W)) % 11]


def rand_date(y0=1950, y1=2010):
    d = datetime.date(y0, 1, 1) + datetime.timedelta(days=R.randrange((datetime.date(y1, 12, 31) - datetime.date(y0, 1, 1)).days))
    return d


def cn_id(valid=True, bad="checksum"):
    region = "%02d%02d%02d" % (R.choice(PROVINCES), R.randint(1, 20), R.randint(1, 30))
    d = rand_date()
    date = d.strftime("%Y%m%d")
    if not valid and bad == "date":
        date = R.choice(["%d1332" % d.year, "%d0230" % d.year, "%d0001" % d.year, "%d1131" % d.year])
    body = region + date + "%03d" % R.randint(0, 999)
    c = id_check(body)
    if not valid and bad == "checksum":
        c = R.choice([x for x in "0123456789X" if x != c])
    return body + c


def cn_id15():
    region = "%02d%02d%02d" % (R.choice(PROVINCES), R.randint(1, 20), R.randint(1, 30))
    return region + rand_date(1940, 1999).strftime("%y%m%d") + "%03d" % R.randint(0, 999)


def luhn_digit(body):
    s = 0
    for i, c in enumerate(reversed(body)):
        v = int(c)
        if i % 2 == 0:
            v *= 2
            if v > 9:
                v -= 9
        s += v
    return str((10 - s % 10) % 10)


def bank_card(valid=True, group=None):
    prefix, n = R.choice([("4", 16), ("51", 16), ("55", 16), ("622202", 19), ("622848", 19), ("621700", 19),
                          ("6222", 16), ("62", 16), ("37", 15), ("34", 15), ("6011", 16), ("3530", 16),
                          ("2221", 16), ("436742", 16), ("601382", 19)])
    body = prefix + "".join(R.choice(string.digits) for _ in range(n - len(prefix) - 1))
    c = luhn_digit(body)
    if not valid:
        c = str((int(c) + R.randint(1, 9)) % 10)
    num = body + c
    g = group if group is not None else R.choice(["", " ", "-", ""])
    if g:
        if n == 15:
            num = g.join([num[:4], num[4:10], num[10:]])
        else:
            num = g.join(num[i:i + 4] for i in range(0, n, 4))
    return num


def mobile():
    d = "1" + R.choice("3456789") + "".join(R.choice(string.digits) for _ in range(9))
    f = R.randrange(8)
    if f == 0:
        return d
    if f == 1:
        return "%s-%s-%s" % (d[:3], d[3:7], d[7:])
    if f == 2:
        return "%s %s %s" % (d[:3], d[3:7], d[7:])
    if f == 3:
        return "+86 " + d
    if f == 4:
        return "+86-%s-%s-%s" % (d[:3], d[3:7], d[7:])
    if f == 5:
        return "0086 " + d
    if f == 6:
        return "+86" + d
    return "(+86) %s %s %s" % (d[:3], d[3:7], d[7:])


def landline():
    area = R.choice(["010", "021", "020", "022", "023", "024", "025", "027", "028", "029", "0755", "0571", "0512",
                     "0731", "0898", "0351", "0451", "0532"])
    sub = str(R.randint(2, 8)) + "".join(R.choice(string.digits) for _ in range(7 if len(area) == 3 else R.choice([6, 7])))
    f = R.randrange(6)
    if f == 0:
        return "%s-%s" % (area, sub)
    if f == 1:
        return "(%s)%s" % (area, sub)
    if f == 2:
        return "（%s）%s" % (area, sub)
    if f == 3:
        return "%s %s" % (area, sub)
    if f == 4:
        return "+86 %s %s" % (area[1:], sub)
    return "%s%s" % (area, sub)


def intl_phone():
    return R.choice([
        lambda: "+1 %d%02d 555 %04d" % (R.randint(2, 9), R.randint(0, 99), R.randint(0, 9999)),
        lambda: "+1 (%d%02d) %d%02d-%04d" % (R.randint(2, 9), R.randint(0, 99), R.randint(2, 9), R.randint(0, 99), R.randint(0, 9999)),
        lambda: "+44 20 %04d %04d" % (R.randint(1000, 9999), R.randint(0, 9999)),
        lambda: "+44 7%03d %06d" % (R.randint(0, 999), R.randint(0, 999999)),
        lambda: "+49 30 %08d" % R.randint(10000000, 99999999),
        lambda: "+33 1 %02d %02d %02d %02d" % tuple(R.randint(10, 99) for _ in range(4)),
        lambda: "+81 3-%04d-%04d" % (R.randint(1000, 9999), R.randint(0, 9999)),
        lambda: "+852 %04d %04d" % (R.randint(2000, 9999), R.randint(0, 9999)),
        lambda: "+65 %04d %04d" % (R.randint(6000, 9999), R.randint(0, 9999)),
        lambda: "+61 2 %04d %04d" % (R.randint(1000, 9999), R.randint(0, 9999)),
        lambda: "%d%02d-%d%02d-%04d" % (R.randint(2, 9), R.randint(0, 99), R.randint(2, 9), R.randint(0, 99), R.randint(0, 9999)),
        lambda: "(%d%02d) %d%02d-%04d" % (R.randint(2, 9), R.randint(0, 99), R.randint(2, 9), R.randint(0, 99), R.randint(0, 9999)),
        lambda: "%d%02d.%d%02d.%04d" % (R.randint(2, 9), R.randint(0, 99), R.randint(2, 9), R.randint(0, 99), R.randint(0, 9999)),
        lambda: "001-%d%02d-555-%04d" % (R.randint(2, 9), R.randint(0, 99), R.randint(0, 9999)),
    ])()


FIRST = ["zhang.san", "li_si", "wangwu88", "chen.jie", "john.smith", "alice", "bob.lee", "m.garcia", "yuki.tanaka",
         "liu-yang", "zhao.lei2021", "service", "hr", "support+cn", "o.brien", "anna.k"]
DOMAINS = ["example.com", "qq.com", "163.com", "gmail.com", "company.cn", "mail.corp-internal.net", "outlook.com",
           "sina.com.cn", "research.lab.edu", "foxmail.com", "acme.io", "uni.ac.uk"]


def email():
    return R.choice(FIRST) + "@" + R.choice(DOMAINS)


def ipv4():
    return R.choice([lambda: "192.168.%d.%d" % (R.randint(0, 255), R.randint(1, 254)),
                     lambda: "10.%d.%d.%d" % (R.randint(0, 255), R.randint(0, 255), R.randint(1, 254)),
                     lambda: "172.%d.%d.%d" % (R.randint(16, 31), R.randint(0, 255), R.randint(1, 254)),
                     lambda: "%d.%d.%d.%d" % (R.randint(1, 223), R.randint(0, 255), R.randint(0, 255), R.randint(1, 254))])()


def ipv6():
    groups = ["%x" % R.randint(0, 0xffff) for _ in range(8)]
    f = R.randrange(4)
    if f == 0:
        return ":".join(groups)
    if f == 1:
        return "2001:db8::%x:%x" % (R.randint(1, 0xffff), R.randint(1, 0xffff))
    if f == 2:
        return "fe80::%x:%x:%x:%x" % tuple(R.randint(1, 0xffff) for _ in range(4))
    return "%s:%s::%s" % (groups[0], groups[1], groups[7])


def rand_tok(n, alphabet=string.ascii_letters + string.digits):
    while True:
        s = "".join(R.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in s):
            return s


def url_cred():
    scheme = R.choice(["https", "http", "ftp", "postgres", "postgresql", "mysql", "mongodb", "redis", "amqp"])
    user = R.choice(["admin", "root", "deploy", "svc_user", "zhangsan", "backup"])
    pw = R.choice([rand_tok(10), "S3cr3t!pw", "p%40ss2024", "Hunter2go", rand_tok(14)])
    host = R.choice(["db.internal.example.com", "10.0.3.7", "files.acme.io", "localhost", "cache.prod.local"])
    port = R.choice(["", ":5432", ":3306", ":6379", ":21", ":8080"])
    path = R.choice(["", "/prod", "/app?sslmode=require", "/data/export", "/0"])
    return "%s://%s:%s@%s%s%s" % (scheme, user, pw, host, port, path)


def api_key():
    return R.choice([
        lambda: "sk-" + rand_tok(48),
        lambda: "sk-" + rand_tok(32, "0123456789abcdef"),
        lambda: "sk-proj-" + rand_tok(40, string.ascii_letters + string.digits + "_-"),
        lambda: "AKIA" + rand_tok(16, string.ascii_uppercase + "234567"),
        lambda: "ghp_" + rand_tok(36),
        lambda: "gho_" + rand_tok(36),
        lambda: "xoxb-%d-%d-%s" % (R.randint(10 ** 11, 10 ** 12), R.randint(10 ** 11, 10 ** 12), rand_tok(24)),
        lambda: "xoxp-%d-%s" % (R.randint(10 ** 11, 10 ** 12), rand_tok(30)),
        lambda: "AIza" + rand_tok(35, string.ascii_letters + string.digits + "_-"),
        lambda: "glpat-" + rand_tok(20),
        lambda: "hf_" + rand_tok(34),
        lambda: "sk_live_" + rand_tok(24),
    ])()


def passport():
    return R.choice(["E", "G", "EA", "EB", "P"]) + "".join(R.choice(string.digits) for _ in range(8 if R.random() < .6 else 7))


# ---- labelled set ---------------------------------------------------------------------------

ZH = {
    "EMAIL": ["请发邮件至{v}联系我们。", "我的邮箱是 {v}，有问题随时找我", "联系人：王经理（{v}）", "简历请投递到{v}，注明应聘岗位。"],
    "PHONE": ["客户电话：{v}，请在工作日联系。", "如有疑问请拨打{v}咨询", "张先生的手机号是{v}。", "紧急联系人电话 {v}", "门店座机：{v}（营业时间9:00-21:00）"],
    "ID_CARD": ["身份证号：{v}", "申请人身份证号码为{v}，请核实。", "乘客证件号 {v} 已登记", "请提供身份证（{v}）复印件"],
    "BANK_CARD": ["退款将转入尾号卡 {v}。", "银行卡号：{v}，开户行：工商银行", "请向账户{v}汇款", "信用卡 {v} 已绑定"],
    "IP": ["服务器地址是 {v}，请勿外传。", "登录IP：{v}", "攻击来源 {v} 已被封禁", "数据库部署在{v}上"],
    "URL_CREDENTIALS": ["连接串：{v}", "把配置改成 {v} 就可以了", "备份脚本里写着{v}，需要尽快修改"],
    "API_KEY": ["接口密钥是 {v}，不要提交到仓库", "请在请求头中带上 {v}", "测试用的 key：{v}"],
    "PASSPORT": ["护照号码：{v}", "旅客护照号 {v}，有效期至2030年", "请核对护照（号码 {v}）"],
}
EN = {
    "EMAIL": ["Please email {v} for details.", "Contact: {v}", "Send your CV to {v} by Friday.", "Reply to <{v}> with the form."],
    "PHONE": ["Call us at {v} today.", "Her phone number is {v}.", "Tel: {v} (office hours)", "You can reach the desk on {v}, ext. 12."],
    "ID_CARD": ["The applicant's Chinese ID number is {v}.", "Resident ID: {v}", "ID card {v} was verified."],
    "BANK_CARD": ["Card number: {v}", "Charge it to {v}, exp 09/27.", "The refund goes to card {v}."],
    "IP": ["The server is at {v}.", "Blocked requests from {v} yesterday.", "ssh into {v} to restart it", "Client IP {v} logged in"],
    "URL_CREDENTIALS": ["Use {v} to connect.", "The old DSN was {v} and it leaked.", "clone from {v} please"],
    "API_KEY": ["Set OPENAI_API_KEY to {v} in your shell.", "Our key is {v}, rotate it monthly.", "curl -H 'Authorization: token {v}' ..."],
    "PASSPORT": ["Passport number: {v}", "His passport no. is {v}.", "passport {v}, expires 2031"],
}
GEN = {"EMAIL": email, "PHONE": lambda: R.choice([mobile, mobile, landline, intl_phone])(), "ID_CARD": lambda: cn_id() if R.random() < .85 else cn_id15(),
       "BANK_CARD": bank_card, "IP": lambda: ipv4() if R.random() < .7 else ipv6(), "URL_CREDENTIALS": url_cred,
       "API_KEY": api_key, "PASSPORT": passport}

# Items written out by hand: tricky contexts and look-alikes with a reason each.
HAND = [
    ("密码：hunter2go；用户名 admin", [("API_KEY", "hunter2go")]),
    ("api_key=AbC123xyz789QwE", [("API_KEY", "AbC123xyz789QwE")]),
    ('config = {"api_key": "9f8e7d6c5b4a39281706"}', [("API_KEY", "9f8e7d6c5b4a39281706")]),
    ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzKEY2024", [("API_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzKEY2024")]),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     [("API_KEY", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")]),
    ("Authorization: Bearer 7f3a9c2e1b8d4f6a0e5c9b3d", [("API_KEY", "7f3a9c2e1b8d4f6a0e5c9b3d")]),
    ("联系我：13812345678 或 zhangsan@example.com", [("PHONE", "13812345678"), ("EMAIL", "zhangsan@example.com")]),
    ("电话13912345678,邮箱li@qq.com", [("PHONE", "13912345678"), ("EMAIL", "li@qq.com")]),
    ("IPv6 loopback-free example: 2001:0db8:85a3:0000:0000:8a2e:0370:7334 is full form", [("IP", "2001:0db8:85a3:0000:0000:8a2e:0370:7334")]),
    ("Reach the gateway at [2001:db8::ff00:42:8329]:443", [("IP", "2001:db8::ff00:42:8329")]),
    ("订单中心电话 010-62345678", [("PHONE", "010-62345678")]),
    ("英国办公室：+44 20 7946 0958", [("PHONE", "+44 20 7946 0958")]),
    ("Call +1 415 555 2671 now", [("PHONE", "+1 415 555 2671")]),
    ("座机0755-1234567转分机", [("PHONE", "0755-1234567")]),
    ("(021)87654321 是上海总部", [("PHONE", "(021)87654321")]),
    ("身份证11010519491231002X已核验", [("ID_CARD", "11010519491231002X")]),
    ("card 4111 1111 1111 1111 (test)", [("BANK_CARD", "4111 1111 1111 1111")]),
    ("Amex: 3782 822463 10005", [("BANK_CARD", "3782 822463 10005")]),
    ("卡号6222021234567890127请核对", []),  # 19 digits but fails Luhn
    ("mysql://root:Passw0rd@127.0.0.1:3306/app", [("URL_CREDENTIALS", "mysql://root:Passw0rd@127.0.0.1:3306/app")]),
    ("git clone https://deploy:ghp_Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78@github.com/acme/app.git",
     [("URL_CREDENTIALS", "https://deploy:ghp_Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78@github.com/acme/app.git")]),
    ("redis://:s3cretPass@cache:6379/0 has a password and no user", [("URL_CREDENTIALS", "redis://:s3cretPass@cache:6379/0")]),
    ("总机 0755-88886666-801 转人工", [("PHONE", "0755-88886666-801")]),
    ("Call 1-800-555-0199 for support", [("PHONE", "1-800-555-0199")]),
    ("UK office +44 (0)20 7946 0958", [("PHONE", "+44 (0)20 7946 0958")]),
    ("联系电话：021-6234-5678", [("PHONE", "021-6234-5678")]),
    ('{"apiKey": "AbCd1234EfGh5678"}', [("API_KEY", "AbCd1234EfGh5678")]),
    ("Email John.Doe@Example.COM today", [("EMAIL", "John.Doe@Example.COM")]),
    ("服务器 fe80::1ff:fe23:4567:890a 已上线", [("IP", "fe80::1ff:fe23:4567:890a")]),
    ("subnet 192.168.1.0/24 is internal", [("IP", "192.168.1.0")]),
    # look-alikes that are not personal data
    ("token: Embedding layers map ids to vectors", []),
    ("api_key = os.environ['OPENAI_API_KEY']", []),
    ("版本号 1.2.3.4 已发布", []),
    ("Upgrade to version 10.0.19041.1 now", []),
    ("Released v2.10.3.1 with fixes", []),
    ("Section 1.2.3.4.5 describes the protocol", []),
    ("IP-like 256.100.1.1 is out of range", []),
    ("订单号：202311051234567890，请保存", []),
    ("订单编号 13812345678 已发货", []),
    ("发票代码 044031900111，发票号码 12345678", []),
    ("发票号码：24442000000012345678", []),
    ("ISBN 978-7-111-54742-6", []),
    ("ISBN-13: 9787111547426", []),
    ("时间戳 1700000000123 对应 2023-11-14", []),
    ("Unix time 1699999999 is in November 2023", []),
    ("价格：￥13,812.00，优惠 1,380 元", []),
    ("The total was $1,234,567.89 for 3 units", []),
    ("会议时间 2023-10-01 14:30:00 在 3 号楼", []),
    ("Timestamp 2024-03-05T12:30:45Z logged", []),
    ("身份证号 110101199003071235 校验位错误", []),
    ("身份证号 110101199013071234 月份不存在", []),
    ("ID 110101199002301234 has Feb 30", []),
    ("银行卡 6222 0212 3456 7890 124 校验不过", []),
    ("Card 4111 1111 1111 1112 fails Luhn", []),
    ("MAC 00:1A:2B:3C:4D:5E is a device address", []),
    ("Ratio 16:9:4 and time 12:30:45", []),
    ("std::vector<int> and a::b are code", []),
    ("UUID 550e8400-e29b-41d4-a716-446655440000 identifies the job", []),
    ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8 fixed it", []),
    ("邮编 100080，地址北京市海淀区", []),
    ("Call extension 1234 or room 5678", []),
    ("The ratio 3.1415926535 is pi", []),
    ("icon@2x.png and logo@3x.jpg are assets", []),
    ("api_key=YOUR_API_KEY_HERE", []),
    ("password: ********", []),
    ("token = None", []),
    ("sk-this-is-not-a-real-key", []),
    ("学号 2021138123 的同学请到教务处", []),
    ("序列号 SN20231105138001 已登记", []),
    ("快递单号 773012345678901", []),
    ("共计 12345678 元，税额 1234567 元", []),
    ("Population 1,412,000,000 in 2023", []),
    ("电话区号 010 代表北京", []),
    ("坐标 39.9042, 116.4074 是北京", []),
    ("Build 20231105.1 of package 3.4.5", []),
    ("RFC 3339 and RFC 4122", []),
    ("手机型号 iPhone 15 Pro Max 256GB", []),
    ("成绩 138 分，排名 1234 位", []),
    ("The code 0x7fffffff is INT_MAX", []),
    ("序号 001-0001-0001", []),
    ("Flight CA1234 departs 13:45 from gate 12", []),
]


def negatives():
    out = []
    for _ in range(12):
        out.append(("身份证号 %s 校验码不对" % cn_id(False, "checksum"), []))
        out.append(("ID %s has an impossible birth date" % cn_id(False, "date"), []))
        out.append(("卡号 %s 未通过校验" % bank_card(False), []))
        out.append(("订单号 %d%02d%02d%010d" % (R.randint(2019, 2024), R.randint(1, 12), R.randint(1, 28), R.randint(0, 10 ** 10 - 1)), []))
        out.append(("Invoice INV-%d-%06d issued" % (R.randint(2019, 2024), R.randint(0, 999999)), []))
        out.append(("version %d.%d.%d.%d" % tuple(R.randint(0, 20) for _ in range(4)), []))
        out.append(("时间 %d-%02d-%02d %02d:%02d:%02d" % (R.randint(2000, 2024), R.randint(1, 12), R.randint(1, 28), R.randint(0, 23), R.randint(0, 59), R.randint(0, 59)), []))
        out.append(("售价 ¥%d.%02d" % (R.randint(1, 99999), R.randint(0, 99)), []))
        out.append(("ISBN 978-%d-%03d-%05d-%d" % (R.randint(0, 9), R.randint(0, 999), R.randint(0, 99999), R.randint(0, 9)), []))
        out.append(("SHA256 %s" % "".join(R.choice("0123456789abcdef") for _ in range(64)), []))
    return out


def pii_set(path):
    items = []
    for kind in GEN:
        for lang, table in (("zh", ZH), ("en", EN)):
            n = 14 if kind != "PASSPORT" else 6
            for _ in range(n):
                v = GEN[kind]()
                tmpl = R.choice(table[kind])
                items.append((tmpl.format(v=v), [(kind, v)]))
    # Several values in one text, mixed languages.
    for _ in range(20):
        kinds = R.sample(["EMAIL", "PHONE", "ID_CARD", "BANK_CARD", "IP", "API_KEY"], 3)
        vals = [(k, GEN[k]()) for k in kinds]
        text = "；".join(R.choice(ZH[k] if R.random() < .5 else EN[k]).format(v=v) for k, v in vals)
        items.append((text, vals))
    items += HAND
    items += negatives()
    with open(path, "w", encoding="utf-8") as f:
        for i, (text, spans) in enumerate(items):
            for k, v in spans:
                assert v in text, (text, v)
            f.write(json.dumps({"id": "pii-%04d" % i, "text": text,
                                "pii": [{"type": k, "value": v} for k, v in spans]}, ensure_ascii=False) + "\n")
    print("wrote %d items to %s" % (len(items), path), file=sys.stderr)


# ---- benchmark corpus -----------------------------------------------------------------------

EN_SENT = ["The quarterly report shows that revenue grew steadily across all regions.",
           "Please review the attached contract before the meeting on Thursday.",
           "Our engineering team migrated the billing service to the new cluster.",
           "Customers asked for clearer instructions on how to reset their passwords.",
           "The model was fine-tuned on internal support tickets from last year.",
           "Shipping delays were caused by the storm that closed the port for two days.",
           "We recommend rotating credentials every ninety days to reduce risk.",
           "The warehouse inventory was reconciled against the purchase orders.",
           "A new onboarding guide explains how to request access to the data lake.",
           "The support agent escalated the ticket to the network operations team.",
           "Training data should be deduplicated and filtered before fine-tuning.",
           "The conference will take place in Shanghai next spring."]
ZH_SENT = ["本季度报告显示各地区收入稳步增长。", "请在周四会议之前审阅附件中的合同。", "工程团队已将计费服务迁移到新集群。",
           "客户希望获得更清晰的密码重置说明。", "模型在去年的内部工单数据上进行了微调。", "暴雨导致港口关闭两天，发货因此延迟。",
           "建议每九十天轮换一次凭据以降低风险。", "仓库库存已与采购订单完成核对。", "新的入职指南说明了如何申请数据湖的访问权限。",
           "客服人员已将工单升级给网络运维团队。", "训练数据在微调之前需要去重和过滤。", "会议将于明年春天在上海举行。"]
PII_IN_TEXT = [lambda: "联系电话：%s" % mobile(), lambda: "Email: %s" % email(), lambda: "身份证号 %s" % cn_id(),
               lambda: "Card %s" % bank_card(), lambda: "Server %s" % ipv4(), lambda: "key %s" % api_key(),
               lambda: "DSN %s" % url_cred(), lambda: "Tel %s" % intl_phone()]


EN_WORDS = ("the of and to in is for that with on as by at from this be are was it an or not have has which will "
            "data model team report service customer order system service price market product project training "
            "quality review contract meeting support ticket network storage cluster billing guide access policy "
            "release version update risk budget plan design test result error issue request response user account "
            "region office city spring winter monday friday morning evening weekly monthly annual growth revenue "
            "cost delay storm port shipment warehouse inventory purchase invoice payment refund schedule deadline "
            "engineer manager analyst director partner vendor client agency school hospital library museum garden "
            "clear quick careful simple strong stable secure private public internal external large small new old "
            "improve reduce increase check confirm deliver prepare approve reject migrate deploy restart monitor "
            "because although however therefore meanwhile finally usually often rarely always never").split()
ZH_CHARS = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所"
            "民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日"
            "那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想"
            "已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指"
            "几九区强放决西被干做必战先回则任取据处理府研质信据客户服务数据模型训练报告质量会议合同仓库库存采购发货港口暴雨延迟工程师")
PUNCT_ZH = "，，，、；"


def sentence(zh):
    if zh:
        n = R.randint(12, 30)
        chars = [R.choice(ZH_CHARS) for _ in range(n)]
        for k in range(R.randint(0, 2)):
            chars.insert(R.randint(3, n - 2), R.choice(PUNCT_ZH))
        return "".join(chars) + "。"
    words = [R.choice(EN_WORDS) for _ in range(R.randint(8, 20))]
    return " ".join(words).capitalize() + "."


def paragraph(zh):
    p = ("" if zh else " ").join(sentence(zh) if R.random() < 0.85 else R.choice(ZH_SENT if zh else EN_SENT)
                                 for _ in range(R.randint(3, 8)))
    if R.random() < 0.5:
        p += R.choice(PII_IN_TEXT)() + ("。" if zh else ". ")
    return p.strip()


def html_doc(zh):
    parts = ["<html><head><title>%s</title><style>p{color:red}</style><script>var x=1;</script></head><body>" %
             ("内部文档" if zh else "Internal note")]
    for _ in range(R.randint(2, 6)):
        tag = R.choice(["p", "div", "li", "h2"])
        parts.append("<%s class=\"c%d\">%s</%s>" % (tag, R.randint(0, 9), paragraph(zh).replace("&", "&amp;"), tag))
        if R.random() < .3:
            parts.append("<br/>")
    parts.append("<p>&copy; 2024 &amp; &lt;ACME&gt;</p></body></html>")
    return "".join(parts)


def corpus(path, mb):
    target = mb * 1024 * 1024
    written = 0
    i = 0
    recent = []
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            i += 1
            zh = R.random() < 0.5
            r = R.random()
            if recent and r < 0.05:
                text = R.choice(recent)  # exact duplicate
            elif recent and r < 0.08:
                text = R.choice(recent) + (" 补充说明。" if zh else " See appendix.")  # near duplicate
            elif r < 0.45:
                text = html_doc(zh)
            else:
                text = "\n\n".join(paragraph(zh) for _ in range(R.randint(2, 5)))
            if len(recent) < 200:
                recent.append(text)
            else:
                recent[R.randrange(200)] = text
            shape = R.random()
            if shape < 0.6:
                rec = {"id": "doc-%d" % i, "source": "bench", "text": text}
            elif shape < 0.8:
                rec = {"id": "doc-%d" % i, "source": "bench", "instruction": paragraph(zh)[:200], "input": "",
                       "output": text}
            else:
                rec = {"id": "doc-%d" % i, "source": "bench",
                       "messages": [{"role": "user", "content": paragraph(zh)[:300]},
                                    {"role": "assistant", "content": text}]}
            line = json.dumps(rec, ensure_ascii=False)
            if R.random() < 0.001:
                line = line[: len(line) // 2]  # a truncated, invalid JSON line
            f.write(line + "\n")
            written += len(line.encode("utf-8")) + 1
    print("wrote %d records (%.1f MB) to %s" % (i, written / 1048576, path), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["pii-set", "corpus"])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--mb", type=int, default=60)
    a = ap.parse_args()
    if a.what == "pii-set":
        pii_set(a.output)
    else:
        corpus(a.output, a.mb)


if __name__ == "__main__":
    main()
