"""The chat templates of the models' own Hugging Face repositories (the `chat_template` field of
their tokenizer_config.json, byte for byte as published copies of it give them), the reference
the built-ins are compared with. They carry no {% generation %} blocks; the built-ins add those
and must render identically."""

# meta-llama/Llama-2-7b-chat-hf
LLAMA2_CHAT = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set sy"
    "stem_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% "
    "set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (messag"
    "e['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles"
    " must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0"
    " and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</"
    "SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% "
    "endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + "
    "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' +"
    " eos_token }}{% endif %}{% endfor %}")

# mistralai/Mistral-7B-Instruct-v0.2, the current template (a system message goes before the
# first user message)
MISTRAL_INSTRUCT = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    '    {%- set loop_messages = messages[1:] %}\n'
    '{%- else %}\n'
    '    {%- set loop_messages = messages %}\n'
    '{%- endif %}\n'
    '\n'
    '{{- bos_token }}\n'
    '{%- for message in loop_messages %}\n'
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must"
    " alternate user/assistant/user/assistant/...') }}\n"
    '    {%- endif %}\n'
    "    {%- if message['role'] == 'user' %}\n"
    '        {%- if loop.first and system_message is defined %}\n'
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]"
    "' }}\n"
    '        {%- else %}\n'
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    '        {%- endif %}\n'
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    '    {%- else %}\n'
    "        {{- raise_exception('Only user and assistant roles are supported, with the exce"
    "ption of an initial optional system message!') }}\n"
    '    {%- endif %}\n'
    '{%- endfor %}\n')

# mistralai/Mistral-7B-Instruct-v0.2 before its update (no system role); v0.1's differs by a
# space after each EOS
MISTRAL_INSTRUCT_LEGACY = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop."
    "index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant"
    "/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + mes"
    "sage['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['con"
    "tent'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are sup"
    "ported!') }}{% endif %}{% endfor %}")

# teknium/OpenHermes-2.5-Mistral-7B
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n"
    "' + message['content'] + '<|im_end|>' + '\n"
    "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n"
    "' }}{% endif %}")

# meta-llama/Meta-Llama-3-8B-Instruct
LLAMA3_INSTRUCT = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<"
    "|start_header_id|>' + message['role'] + '<|end_header_id|>\n"
    '\n'
    "'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content ="
    " bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt "
    "%}{{ '<|start_header_id|>assistant<|end_header_id|>\n"
    '\n'
    "' }}{% endif %}")

# A Jinja template of another family, with no generation blocks (HuggingFaceH4/zephyr-7b-beta):
# its assistant turns are found turn by turn.
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}")
