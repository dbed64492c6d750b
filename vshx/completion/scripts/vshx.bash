# bash completion for vshx: a thin wrapper around `vshx complete`, which knows the commands,
# options, domains, disks and chain layers.  Install: eval "$(vshx completion bash)" in
# ~/.bashrc, or vshx completion bash > /usr/share/bash-completion/completions/vshx
_vshx() {
    # the word being completed as typed: bash splits qemu:///system at its ':' (COMP_WORDBREAKS),
    # and __ltrim_colon_completions below needs the whole word to take off what bash keeps
    local cur=${COMP_WORDS[COMP_CWORD]}
    if declare -F _get_comp_words_by_ref >/dev/null; then
        _get_comp_words_by_ref -n : cur
    fi
    local line=${COMP_LINE:0:COMP_POINT}
    line=${line#"${COMP_WORDS[0]}"}
    line=${line#"${line%%[![:space:]]*}"}
    # one candidate a line, taken as it is: vshx quotes each for the shell already, so no
    # word splitting and no pathname expansion (nullglob, failglob, vda[2] beside a file vda2)
    local candidate
    COMPREPLY=()
    while IFS= read -r candidate; do
        [[ -n $candidate ]] && COMPREPLY+=("$candidate")
    done < <(command "${COMP_WORDS[0]}" complete --shell bash -- "$line" 2>/dev/null)
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == */ ]]; then
        compopt -o nospace 2>/dev/null
    fi
    if declare -F __ltrim_colon_completions >/dev/null; then
        __ltrim_colon_completions "$cur"
    fi
}
complete -F _vshx vshx
