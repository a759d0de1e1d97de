"""Builds the demo inputs in data/ (deterministic; run `python data/make_samples.py`, outputs are committed).

We wrote every question and answer here ourselves (Apache-2.0, like the rest of the repository). The files
cover six input formats and carry the problems the pipeline must find: exact duplicates, near-duplicates
(punctuation and one-word edits, Simplified vs Traditional Chinese versions of the same prompt), English replies
to Chinese prompts, empty replies, identical replies and a couple of malformed lines. Traditional Chinese text
is made with OpenCC (s2twp) from the Simplified text, so the pairs are true script variants.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240601

# (prompt, good reply, poor reply) — Simplified Chinese.
ZH = [
    ("用一句话解释什么是光合作用。", "光合作用是绿色植物利用光能，把二氧化碳和水合成有机物并释放氧气的过程。", "光合作用就是植物晒太阳。"),
    ("为什么天空是蓝色的？", "阳光穿过大气时，波长较短的蓝光被空气分子散射得更多，所以我们看到的天空呈蓝色。", "因为海是蓝色的，天空反射了海的颜色。"),
    ("如何煮出一锅好吃的米饭？", "先把米淘洗两三遍，米和水的比例约为一比一点二，浸泡二十分钟后再煮，煮好后焖十分钟再开盖。", "把米放进锅里煮就行。"),
    ("推荐三本适合初学者的编程书。", "可以看《Python编程：从入门到实践》《笨办法学Python》和《计算机科学导论》，它们讲解循序渐进，练习也多。", "随便买几本就行。"),
    ("地球到月球的平均距离是多少？", "地球到月球的平均距离约为三十八万四千公里。", "大概一千公里。"),
    ("请解释什么是通货膨胀。", "通货膨胀是指一段时间内物价总体水平持续上涨、货币购买力下降的现象。", "通货膨胀就是钱变多了，大家都更富了。"),
    ("写一首关于春天的五言绝句。", "春风拂柳绿，细雨润花红。燕子归檐下，田间处处耕。", "春天来了。"),
    ("怎样才能提高睡眠质量？", "保持固定的作息时间，睡前一小时不看手机，卧室保持安静、黑暗和凉爽，下午以后少喝咖啡。", "多喝咖啡就能睡得好。"),
    ("Python 中列表和元组有什么区别？", "列表是可变的，可以增删改元素；元组是不可变的，创建后不能修改，因此可以作为字典的键。", "没有区别。"),
    ("给我一个学习英语的建议。", "每天坚持听读二十分钟，把遇到的生词记在本子上，并定期复习。", "别学了，用翻译软件就够了。"),
    ("长城有多长？", "根据2012年国家文物局公布的数据，历代长城总长度为21196.18公里。", "长城大约一百米长。"),
    ("解释一下什么是机器学习。", "机器学习是让计算机从数据中自动学习规律，并用这些规律对新数据做出预测或决策的方法。", "机器学习就是机器人上学。"),
    ("水的沸点是多少度？", "在一个标准大气压下，纯水的沸点是一百摄氏度；海拔越高，沸点越低。", "水的沸点是五十度。"),
    ("如何缓解工作压力？", "可以把任务拆小并排好优先级，适当运动，保证睡眠，并和信任的人聊聊自己的感受。", "辞职就好了。"),
    ("请推荐一个周末短途旅行的目的地。", "如果你在上海，可以去杭州西湖，高铁一小时左右，湖光山色适合散步骑行。", "去哪儿都行。"),
    ("什么是区块链？", "区块链是一种按时间顺序把数据区块链接起来、由多方共同维护且难以篡改的分布式账本技术。", "区块链就是比特币。"),
    ("怎样养好一盆绿萝？", "绿萝喜欢散射光和湿润环境，土干了再浇透水，避免暴晒，每月施一次稀薄的液体肥。", "每天浇三次水。"),
    ("一年有多少天？", "平年有365天，闰年有366天。", "一年有300天。"),
    ("请把“知识就是力量”翻译成英文。", "Knowledge is power.", "Knowledge is money."),
    ("为什么要多喝水？", "水参与人体的新陈代谢、调节体温、帮助消化和排出废物，缺水会导致疲劳和头痛。", "喝水会让人变胖。"),
    ("如何写好一份简历？", "突出与岗位相关的经历和成果，用数字说明贡献，控制在一页内，并仔细检查错别字。", "把所有经历都写上，越长越好。"),
    ("太阳系有几颗行星？", "太阳系有八颗行星：水星、金星、地球、火星、木星、土星、天王星和海王星。", "太阳系有九颗行星，包括冥王星。"),
    ("解释一下什么是递归。", "递归是函数在定义中调用自身，把问题分解成规模更小的同类子问题，直到遇到可以直接求解的基准情况。", "递归就是循环。"),
    ("红烧肉怎么做？", "五花肉切块焯水，锅中炒糖色后下肉翻炒，加入酱油、料酒、葱姜和热水，小火炖一小时后大火收汁。", "把肉放进水里煮熟。"),
    ("如何保护视力？", "用眼四十分钟左右休息一下，看看远处，保持正确的读写姿势，并保证充足的户外活动时间。", "多看手机可以锻炼眼睛。"),
    ("什么是碳中和？", "碳中和是指通过减排、植树造林和碳捕集等方式，使一定时期内的二氧化碳排放量与吸收量相互抵消。", "碳中和就是不用煤了。"),
    ("HTTP 和 HTTPS 有什么区别？", "HTTPS 在 HTTP 的基础上加入了 TLS 加密和证书校验，传输的数据经过加密，更安全。", "HTTPS 比 HTTP 多一个字母，没有别的区别。"),
    ("请介绍一下京剧。", "京剧是中国的国粹之一，形成于清代北京，融合了唱、念、做、打，角色分为生、旦、净、丑。", "京剧是一种现代流行音乐。"),
    ("怎样才能坚持跑步？", "从每次二十分钟慢跑开始，定好固定时间，找个跑伴或加入跑团，并记录每次的进步。", "每天跑二十公里，一开始就要拼命。"),
    ("如何判断鸡蛋是否新鲜？", "把鸡蛋放进清水中，沉底平躺的比较新鲜，竖起来或浮起来的说明已经不新鲜了。", "看颜色就知道。"),
    ("中国的首都是哪里？", "中国的首都是北京。", "中国的首都是上海。"),
    ("什么是复利？", "复利是指把利息计入本金，下一期按新的本金继续计息，也就是常说的“利滚利”。", "复利就是利息翻倍。"),
    ("请解释一下相对论的核心思想。", "相对论认为物理定律在所有惯性参考系中相同，光速不变，时间和空间会随运动状态而变化，质量和能量可以相互转换。", "相对论说一切都是相对的，没有对错。"),
    ("怎么做番茄炒蛋？", "鸡蛋打散炒至凝固盛出，番茄切块炒出汁，加少许盐和糖，再倒回鸡蛋翻炒均匀即可。", "番茄和鸡蛋一起放进锅里煮。"),
    ("为什么秋天树叶会变黄？", "秋天气温降低、日照变短，叶绿素分解减少，叶子里原有的叶黄素和胡萝卜素显现出来，所以变黄。", "因为树叶生病了。"),
    ("写一句鼓励考生的话。", "你付出的每一分努力都会被看见，沉着应考，相信自己，你一定可以！", "考不好也没关系，反正没用。"),
    ("什么是 GDP？", "GDP 即国内生产总值，是一个国家或地区在一定时期内生产的全部最终产品和服务的市场价值。", "GDP 是一种汽油。"),
    ("如何学好数学？", "打牢基础概念，多做练习并整理错题，遇到不懂的及时问，学会把新知识和旧知识联系起来。", "背答案就可以了。"),
    ("解释一下“画蛇添足”的意思。", "这个成语比喻做了多余的事，非但无益，反而坏事。", "意思是画画要画得很仔细。"),
    ("熊猫主要吃什么？", "大熊猫主要以竹子为食，偶尔也会吃竹笋、少量水果和肉类。", "熊猫主要吃鱼。"),
    ("如何给电脑清理灰尘？", "先关机断电，打开机箱后用吹气球或软毛刷清理风扇和散热片，再用压缩空气吹净缝隙。", "直接用水冲洗。"),
    ("请总结一下《西游记》的主要内容。", "《西游记》讲述唐僧带领孙悟空、猪八戒、沙僧西天取经，一路降妖除魔、历经九九八十一难最终取得真经的故事。", "讲的是一只猴子的日常生活。"),
    ("为什么要垃圾分类？", "垃圾分类可以提高资源回收利用率，减少填埋和焚烧带来的污染，降低处理成本。", "没有必要，反正最后都混在一起。"),
    ("怎样泡一杯好喝的绿茶？", "用八十摄氏度左右的水，先注少量水润茶，再沿杯壁注水，一到两分钟后即可饮用。", "用沸水煮十分钟。"),
    ("什么是人工智能？", "人工智能是研究和开发能够模拟、延伸人的智能的理论、方法和系统的学科，包括感知、推理、学习和决策等能力。", "人工智能就是会说话的电脑。"),
    ("如何预防感冒？", "勤洗手，保持室内通风，适当锻炼，注意休息和保暖，流感季节可以接种疫苗。", "感冒无法预防。"),
    ("为什么月亮有阴晴圆缺？", "月亮本身不发光，随着它绕地球运动，被太阳照亮的部分朝向地球的面积不断变化，就形成了月相。", "因为月亮会变大变小。"),
    ("推荐一部适合全家观看的电影。", "可以看《寻梦环游记》，故事温暖，讲述家庭与记忆，大人和孩子都能看得懂。", "推荐一部恐怖片。"),
    ("如何在家种葱？", "把带根的葱白插入湿润的土里，放在有散射光的地方，保持土壤微湿，一周左右就能长出新叶。", "把葱放冰箱里就会长。"),
    ("请简单介绍一下孔子。", "孔子是春秋时期的思想家、教育家，儒家学派创始人，主张仁和礼，其言行被弟子记录在《论语》中。", "孔子是唐朝的皇帝。"),
]

# (prompt, good reply, poor reply) — English.
EN = [
    ("What is the capital of Australia?", "The capital of Australia is Canberra.", "Sydney."),
    ("Explain what a hash table is in one paragraph.", "A hash table stores key-value pairs in an array, using a hash function to turn each key into an index, so lookups, inserts and deletes take constant time on average.", "It is a table where you put hashes."),
    ("How do I keep basil alive indoors?", "Give it six hours of sun a day, water when the top of the soil is dry, and pinch off flower buds so it keeps growing leaves.", "Water it every hour."),
    ("Give me three tips for a job interview.", "Research the company, prepare short stories that show your skills, and ask thoughtful questions at the end.", "Just wing it."),
    ("Why do cats purr?", "Cats purr when they are content, but also to soothe themselves when stressed; the vibration may even help healing.", "Because they are angry."),
    ("What is the difference between weather and climate?", "Weather is the short-term state of the atmosphere; climate is the average pattern of weather in a place over decades.", "They are the same thing."),
    ("Write a haiku about autumn.", "Crisp leaves drift and fall / the maple lets go of red / cold wind hums softly", "Autumn is a season."),
    ("How many bones are in the adult human body?", "An adult human body has 206 bones.", "About 50."),
    ("Suggest a name for a bakery.", "How about \"Rise & Shine Bakery\" — warm, friendly and about fresh bread in the morning.", "Bakery."),
    ("What does HTTP status 404 mean?", "404 Not Found means the server could not find the requested resource.", "It means the server is on fire."),
    ("How can I make my code easier to read?", "Use clear names, keep functions short and focused, write comments that explain why, and format consistently.", "Put everything on one line."),
    ("Why is the ocean salty?", "Rivers carry dissolved minerals from rocks into the sea; when water evaporates the salts stay behind and build up.", "Because fish cry."),
    ("What is photosynthesis?", "Photosynthesis is how plants use light energy to turn carbon dioxide and water into sugar, releasing oxygen.", "When plants take photos."),
    ("Recommend a beginner-friendly programming language.", "Python is a good first language: its syntax is readable and it has a huge community and libraries.", "Assembly."),
    ("How long should I boil an egg for a soft yolk?", "About six to seven minutes in boiling water, then move it to cold water to stop cooking.", "Thirty minutes."),
    ("What causes rainbows?", "Sunlight is refracted, reflected and dispersed inside raindrops, splitting it into its colours.", "Rainbows are painted by clouds."),
    ("Summarise the plot of Romeo and Juliet in two sentences.", "Two young lovers from feuding families in Verona marry in secret. A chain of misunderstandings leads both to take their own lives, which finally reconciles their families.", "A story about a balcony."),
    ("How do vaccines work?", "Vaccines show the immune system a harmless piece or version of a germ so it learns to recognise and fight the real one later.", "They make you sick on purpose forever."),
    ("What is a good way to learn vocabulary?", "Use spaced repetition flashcards, learn words in context sentences, and use new words in your own writing.", "Read a dictionary once."),
    ("Convert 100 degrees Fahrenheit to Celsius.", "100 °F is about 37.8 °C.", "100 °F is 100 °C."),
]

# More items, each used once (sharegpt, openai, csv), so that duplicates stay the planted minority.
ZH2 = [
    ("如何挑选一个成熟的西瓜？", "拍一拍声音清脆、瓜蒂弯曲发干、底部有黄斑的西瓜通常比较成熟。", "越大的西瓜越甜。"),
    ("地铁上遇到有人晕倒该怎么办？", "先大声呼救并通知工作人员，检查其呼吸，必要时拨打急救电话并进行心肺复苏。", "绕开走就行。"),
    ("请解释什么是基金定投。", "基金定投是在固定时间以固定金额买入同一只基金，用时间分散买入成本。", "基金定投就是一次性买很多基金。"),
    ("怎样给孩子讲解分数？", "可以用切披萨或分蛋糕的例子，让孩子看到整体被平均分成几份，取其中几份就是几分之几。", "让孩子自己背概念。"),
    ("为什么飞机能飞起来？", "机翼的形状和迎角使上方气流更快、压强更小，上下压力差产生升力，发动机提供前进的推力。", "因为飞机比空气轻。"),
    ("如何去除衣服上的油渍？", "先用洗洁精或专用去渍剂涂在油渍处揉搓几分钟，再用温水按常规方法清洗。", "用冷水冲一下就好。"),
    ("什么是量子计算？", "量子计算利用量子比特的叠加和纠缠来处理信息，在某些问题上可能比传统计算机快得多。", "量子计算就是很小的计算器。"),
    ("怎样写一封得体的请假邮件？", "写明请假原因、起止时间和工作交接安排，语气礼貌简洁，并抄送相关同事。", "直接写“我明天不来了”。"),
    ("怎么判断自己是否缺觉？", "白天经常犯困、注意力难以集中、情绪易怒或需要靠咖啡提神，往往说明睡眠不足。", "只要还能醒来就不缺觉。"),
    ("为什么要定期更换牙刷？", "用久的牙刷刷毛会变形、滋生细菌，清洁效果下降，一般建议每三个月更换一次。", "牙刷可以用一辈子。"),
    ("如何在面试中介绍自己？", "用一两分钟讲清楚你的背景、与岗位相关的经历和成果，以及你为什么想加入这家公司。", "把简历从头到尾念一遍。"),
    ("电动车电池怎样保养？", "避免电量完全耗尽再充，不要长时间满电放置，夏天避免暴晒，使用原装充电器。", "每次都充一整夜。"),
    ("请介绍一下敦煌莫高窟。", "莫高窟位于甘肃敦煌，始建于十六国时期，保存有大量精美壁画和彩塑，是世界文化遗产。", "莫高窟是一座现代商场。"),
    ("怎样和邻居友好相处？", "见面主动打招呼，注意控制噪音，有矛盾时心平气和地沟通，必要时互相帮忙。", "不理他们就好。"),
    ("冬天如何防止皮肤干燥？", "洗澡水不要太热，洗后及时涂抹保湿霜，室内可以使用加湿器，并多喝水。", "冬天不用护肤。"),
    ("如何规划一次自驾游？", "提前确定路线和住宿，检查车辆状况，准备导航、应急工具和常用药品，并关注沿途天气。", "说走就走，什么都不用准备。"),
    ("什么是光年？", "光年是长度单位，指光在真空中一年内传播的距离，约为九万四千六百亿公里。", "光年是一种时间单位。"),
    ("怎样训练小狗定点排便？", "固定时间带它到指定地点，成功后立刻奖励零食和表扬，失误时不要打骂，耐心重复。", "打它几次就学会了。"),
    ("如何快速记住一篇课文？", "先理解内容和结构，再分段背诵，利用关键词串联，并在睡前和第二天早上各复习一次。", "读一遍就能记住。"),
    ("为什么要接种疫苗？", "疫苗能让身体提前产生免疫力，降低感染和重症的风险，也能保护无法接种的人。", "疫苗会让人生病，不要打。"),
    ("怎么煮出不粘锅的饺子？", "水要多，水开后下饺子并轻轻推动，每次沸腾加一次冷水，加三次后饺子浮起即可。", "用小火慢慢煮两个小时。"),
    ("解释一下“守株待兔”的意思。", "比喻死守狭隘经验、不知变通，或妄想不劳而获。", "意思是要耐心保护兔子。"),
    ("如何选择一双合适的跑鞋？", "根据脚型和跑步习惯选择，下午试穿，脚尖留一指空间，注意缓震和包裹性。", "买最便宜的就行。"),
    ("为什么会打喷嚏？", "鼻腔黏膜受到灰尘、花粉或病毒刺激时，身体会通过打喷嚏把异物排出去。", "因为有人在想你。"),
    ("如何提高演讲能力？", "提前准备并反复练习，录下来找问题，注意语速和眼神交流，从小场合开始积累经验。", "上台前喝点酒。"),
]

EN2 = [
    ("How do I remove a stripped screw?", "Press a wide rubber band between the screwdriver and the screw for grip, or use a screw extractor bit.", "Hit it with a hammer until it disappears."),
    ("What is compound interest?", "Compound interest is interest earned on both the original amount and the interest already added to it.", "Interest that is complicated."),
    ("How can I save money on groceries?", "Plan meals for the week, shop with a list, buy store brands, and avoid shopping when hungry.", "Buy everything at the airport."),
    ("Why do leaves change colour in autumn?", "As days shorten, trees stop making chlorophyll, revealing yellow and orange pigments that were there all along.", "Because they are cold."),
    ("Give me a tip for writing clear emails.", "Put the main request in the first sentence and keep each paragraph to one idea.", "Use as many words as possible."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 °C (212 °F) at sea level.", "About 50 °C."),
]

SYSTEMS_ZH = ["你是一个乐于助人的中文助手。", "请用简洁的中文回答。"]
SYSTEMS_EN = ["You are a helpful assistant.", "Answer concisely."]


def to_traditional(texts: list[str]) -> list[str]:
    import opencc

    conv = opencc.OpenCC("s2twp")
    return [conv.convert(t) for t in texts]


def dump_jsonl(path: Path, rows: list, extra_lines: dict[int, str] | None = None) -> None:
    """JSON Lines; `extra_lines` inserts raw (malformed) lines at given positions."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    for pos, raw in sorted((extra_lines or {}).items()):
        lines.insert(pos, raw)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(out: Path = HERE) -> None:
    rng = random.Random(SEED)
    zh_t = to_traditional([x for item in ZH for x in item])
    ZH_T = [tuple(zh_t[i : i + 3]) for i in range(0, len(zh_t), 3)]
    zh2_t = to_traditional([x for item in ZH2 for x in item])
    ZH2_T = [tuple(zh2_t[i : i + 3]) for i in range(0, len(zh2_t), 3)]

    # 1. flat_zh.jsonl — flat triples, Simplified Chinese, with problems.
    flat = []
    for i, (p, c, r) in enumerate(ZH[:40]):
        row = {"id": f"flat-{i:03d}", "prompt": p, "chosen": c, "rejected": r}
        if i % 4 == 0:
            row = {"id": row["id"], "system": SYSTEMS_ZH[i % 2], **{k: row[k] for k in ("prompt", "chosen", "rejected")}}
        flat.append(row)
    flat.append({**flat[1], "id": "flat-dup-1"})  # exact duplicate (same texts, other id)
    flat.append({**flat[5], "id": "flat-dup-5"})
    flat.append({**flat[8], "id": "flat-dup-8"})
    flat.append({"id": "flat-near-2", "prompt": ZH[2][0].replace("？", "?"), "chosen": ZH[2][1], "rejected": ZH[2][2]})  # punctuation
    flat.append({"id": "flat-near-6", "prompt": "写一首关于春天的五言诗。", "chosen": ZH[6][1], "rejected": ZH[6][2]})  # one-word edit
    flat.append({"id": "flat-near-13", "prompt": ZH[13][0], "chosen": ZH[13][1].replace("适当运动", "适度运动"), "rejected": ZH[13][2]})
    flat.append({"id": "flat-en-reply-1", "prompt": ZH[40][0], "chosen": "Pandas mainly eat bamboo, plus some shoots and fruit.", "rejected": ZH[40][2]})
    flat.append({"id": "flat-en-reply-2", "prompt": ZH[41][0], "chosen": ZH[41][1], "rejected": "Just rinse it with water."})
    flat.append({"id": "flat-empty", "prompt": ZH[42][0], "chosen": ZH[42][1], "rejected": ""})
    flat.append({"id": "flat-identical", "prompt": ZH[43][0], "chosen": ZH[43][1], "rejected": ZH[43][1]})
    flat.append({"id": "flat-ws-identical", "prompt": ZH[44][0], "chosen": ZH[44][1], "rejected": ZH[44][1] + "\n"})
    flat.append({"id": "flat-wrong-type", "prompt": 42, "chosen": "四十二。", "rejected": "不知道。"})
    rng.shuffle(flat)
    dump_jsonl(out / "flat_zh.jsonl", flat, {17: '{"id": "flat-broken", "prompt": "如何学好物理？", "chosen": "多做实验',
                                              30: '{"id": "flat-bad-type", "prompt": 42, "chosen": "?", "rejected": "!"}'[:-1] + ", }"})

    # 2. chat_trl.jsonl — TRL conversational (explicit prompt), multi-turn, Traditional + English.
    def msgs(*turns: tuple[str, str]) -> list[dict]:
        return [{"role": r, "content": c} for r, c in turns]

    trl = []
    for p, c, r in ZH_T[:10]:  # Traditional versions of flat_zh pairs: cross-script near-duplicates
        trl.append({"prompt": msgs(("user", p)), "chosen": msgs(("assistant", c)), "rejected": msgs(("assistant", r))})
    for p, c, r in ZH2_T[:8]:
        trl.append({"prompt": msgs(("user", p)), "chosen": msgs(("assistant", c)), "rejected": msgs(("assistant", r))})
    for i, (p, c, r) in enumerate(EN[:10]):
        sys = [("system", SYSTEMS_EN[i % 2])] if i % 3 == 0 else []
        trl.append({"prompt": msgs(*sys, ("user", p)), "chosen": msgs(("assistant", c)), "rejected": msgs(("assistant", r))})
    trl.append({"prompt": msgs(("user", "我想学做饭，从哪道菜开始比较好？"), ("assistant", "可以从番茄炒蛋开始，简单又下饭。"),
                               ("user", "具体怎么做？")),
                "chosen": msgs(("assistant", ZH[33][1])), "rejected": msgs(("assistant", ZH[33][2]))})
    trl.append({"prompt": msgs(("user", "I want to start running."), ("assistant", "Great! How fit are you now?"),
                               ("user", "Not very. How do I keep it up?")),
                "chosen": msgs(("assistant", "Start with 20 minutes of easy jogging three times a week, and track your progress.")),
                "rejected": msgs(("assistant", "Run a marathon next week."))})
    trl.append({"prompt": msgs(("user", ZH_T[30][0])), "chosen": msgs(("assistant", "The capital of China is Beijing.")),
                "rejected": msgs(("assistant", ZH_T[30][2]))})  # English reply to a Chinese prompt
    trl.append(trl[3])  # exact duplicate
    trl.append({"prompt": msgs(("assistant", "你好！"), ("user", "你好")), "chosen": msgs(("assistant", "有什么可以帮你？")),
                "rejected": msgs(("assistant", "嗯。"))})  # roles out of order → ingest rejects it
    dump_jsonl(out / "chat_trl.jsonl", trl)

    # 3. sharegpt_ranking.json — LLaMA-Factory ShareGPT ranking, Traditional and Simplified.
    sg = []
    for i, (p, c, r) in enumerate(ZH2_T[8:16]):
        conv = [{"from": "system", "value": "你是一位知識淵博的助理。"}] if i % 4 == 0 else []
        conv.append({"from": "human", "value": p})
        sg.append({"conversations": conv, "chosen": {"from": "gpt", "value": c}, "rejected": {"from": "gpt", "value": r}})
    for p, c, r in ZH[45:]:
        sg.append({"conversations": [{"from": "human", "value": p}], "chosen": {"from": "gpt", "value": c},
                   "rejected": {"from": "gpt", "value": r}})
    sg.append({"conversations": [{"from": "human", "value": ZH2_T[16][0]}], "chosen": {"from": "gpt", "value": ZH2_T[16][1]},
               "rejected": {"from": "gpt", "value": ""}})  # empty reply
    sg.append(sg[0])  # exact duplicate
    (out / "sharegpt_ranking.json").write_text(json.dumps(sg, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    # 4. hh_en.jsonl — Anthropic HH-RLHF transcripts, English, some multi-turn.
    hh = []
    for i, (p, c, r) in enumerate(EN[10:]):
        prefix = f"\n\nHuman: {p}" if i % 3 else f"\n\nHuman: Hi!\n\nAssistant: Hello! What can I do for you?\n\nHuman: {p}"
        hh.append({"chosen": f"{prefix}\n\nAssistant: {c}", "rejected": f"{prefix}\n\nAssistant: {r}"})
    hh.append(hh[2])  # exact duplicate
    hh.append({"chosen": f"\n\nHuman: {EN[0][0]}\n\nAssistant: {EN[0][1]}", "rejected": f"\n\nHuman: {EN[0][0]}\n\nAssistant: {EN[0][1]}"})
    hh.append({"chosen": f"\n\nHuman: {EN[1][0]}?\n\nAssistant: {EN[1][1]}", "rejected": f"\n\nHuman: {EN[1][0]}?\n\nAssistant: {EN[1][2]}"})
    dump_jsonl(out / "hh_en.jsonl", hh)

    # 5. openai_prefs.jsonl — OpenAI preference fine-tuning format, mixed zh/en.
    oa = []
    for i, (p, c, r) in enumerate(ZH2[17:22] + EN2[:3] + [ZH[0]]):  # the last one repeats a flat_zh pair
        messages = ([{"role": "developer", "content": SYSTEMS_ZH[0]}] if i % 3 == 0 and i < 5 else []) + [{"role": "user", "content": p}]
        oa.append({"input": {"messages": messages, "tools": [], "parallel_tool_calls": True},
                   "preferred_output": [{"role": "assistant", "content": c}],
                   "non_preferred_output": [{"role": "assistant", "content": r}]})
    dump_jsonl(out / "openai_prefs.jsonl", oa)

    # 6. scored.csv — flat triples with scores in a spreadsheet export, zh + zh-Hant + en.
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["prompt", "chosen", "rejected", "chosen_score", "rejected_score", "annotator"])
    rows = ZH2[22:25] + EN2[3:6]
    for i, (p, c, r) in enumerate(rows):
        w.writerow([p, c, r, f"{7 + (i % 3) * 0.5:.1f}", f"{2 + (i % 4) * 0.5:.1f}", f"a{i % 3}"])
    w.writerow([rows[0][0], rows[0][1], rows[0][2], "8.0", "3.0", "a1"])  # exact duplicate of the first row's texts
    # identical once whitespace is folded (the clean stage's check), different to a plain comparison
    w.writerow(["Is Python a good first language?", "Yes, Python is a good first language.",
                "Yes, Python is a good  first language.", "6.0", "5.5", "a2"])
    (out / "scored.csv").write_text(buf.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
